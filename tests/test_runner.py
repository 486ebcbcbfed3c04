import numpy as np
import pytest

from harness.builds import REGISTRY
from harness.builds.base import Build, BuildContext
from harness.builds.torch_ref import TorchBuild
from harness.devices import load_devices
from harness.model import get_model
from harness.errors import UserError
from harness.runner.measure import Settings, measure
from harness.runner.run import RunRequest, run
from harness.runner.stats import noise_warning, summarize
from harness.runner.testknob import ENV as KNOB, slow_layers
from tests.conftest import REPO


class FakeClock:
    """Advances 1000 ns per reading, so every interval is an exact, known number."""

    def __init__(self):
        self.now = 0

    def __call__(self):
        self.now += 1000
        return self.now


class CountingExe:
    def __init__(self):
        self.runs = self.timed = 0

    def run(self, x):
        self.runs += 1
        return x

    def run_timed(self, x, clock):
        self.timed += 1
        t0 = clock()
        return x, {"a": clock() - t0, "b": 5}

    def impl(self, layer_id):
        return "test"


def test_measure_does_warmups_then_repeats_and_keeps_raw_samples():
    exe = CountingExe()
    steps = []
    samples = measure(exe, np.zeros(1), Settings(warmup=2, repeats=4), clock=FakeClock(),
                      on_step=lambda: steps.append(1))
    assert exe.runs == exe.timed == 6
    assert samples.e2e_ns == [1000] * 4
    assert samples.layers_ns == {"a": [1000] * 4, "b": [5] * 4}
    assert len(steps) == 6


def test_the_test_knob_slows_a_layer_of_every_build_or_of_the_build_it_names(monkeypatch):
    """verdict_quality slows one layer of one build (build/layer=ms): the other builds' series
    of that layer must stay unslowed, or they are knob layers the campaign counts as chance."""
    monkeypatch.setenv(KNOB, "torch/a=0.01,b=0.02")

    def layer_ns(build):
        return measure(CountingExe(), np.zeros(1), Settings(warmup=0, repeats=1), clock=FakeClock(),
                       build=build).layers_ns

    assert layer_ns("torch")["a"][0] > 1000 + 9000 and layer_ns("torch")["b"][0] > 5 + 19000
    assert layer_ns("tvm")["a"] == [1000] and layer_ns("tvm")["b"][0] > 5 + 19000
    assert slow_layers("caffe2-nnpack/enc0.conv1=1.5", build="caffe2-nnpack") == {"enc0.conv1": 1.5}
    assert slow_layers("caffe2-nnpack/enc0.conv1=1.5", build="torch") == {}
    for bad in ("torch/=1", "a=-1", "a=x", "a"):
        with pytest.raises(UserError, match=KNOB):
            slow_layers(bad)


def test_settings_are_validated():
    with pytest.raises(ValueError):
        Settings(repeats=0)


def test_noise_rules():
    assert summarize([1.0, 2.0, 3.0]).median == 2.0
    assert noise_warning("x", [1.0] * 3).startswith("x: only 3 samples")
    assert "noisy" in noise_warning("x", [1.0, 1.0, 1.0, 1.0, 2.0])
    assert noise_warning("x", [1.0, 1.01, 0.99, 1.0, 1.0]) is None


class ExplodingBuild(Build):
    name = "exploding"
    description = "fails to compile, on purpose"

    def compile(self, ctx: BuildContext):
        raise RuntimeError("compiler crashed <badly>")


class WrongBuild(TorchBuild):
    """Real PyTorch, with its output scaled: it must be caught by the reference check."""
    name = "wrong"

    def compile(self, ctx):
        exe = super().compile(ctx)
        plain = exe.run
        exe.run = lambda x: plain(x) * 1.01
        return exe


@pytest.fixture
def extra_builds(monkeypatch):
    monkeypatch.setitem(REGISTRY, "exploding", f"{__name__}:ExplodingBuild")
    monkeypatch.setitem(REGISTRY, "wrong", f"{__name__}:WrongBuild")


def test_a_failing_build_is_recorded_and_the_others_complete(extra_builds):
    device = load_devices(REPO / "devices.yaml").get("local")
    req = RunRequest(get_model("unet-tiny"), device, ["exploding", "torch", "wrong"], Settings(0, 2))
    out = run(req)
    by_name = {b["name"]: b for b in out["builds"]}
    assert by_name["exploding"]["status"] == "failed"
    assert by_name["exploding"]["message"] == "RuntimeError: compiler crashed <badly>"
    assert by_name["torch"]["status"] == "ok" and by_name["torch"]["max_rel_error"] == 0.0
    assert by_name["wrong"]["status"] == "failed"
    assert "exceeds the tolerance" in by_name["wrong"]["message"]
    assert by_name["wrong"]["max_rel_error"] == pytest.approx(0.01, rel=1e-3)
    assert out["system"]["before"] and out["system"]["after"]


def test_each_local_build_runs_in_its_own_process_with_its_environment(tiny_result):
    """Local runs isolate builds as devices do: the NNPACK build's OpenMP workers sleep, stock
    torch keeps the defaults, and both are recorded; the heap setting is in the environment
    and the fingerprint's software (a change of it annotates the history)."""
    import json  # noqa: PLC0415

    doc = json.loads(tiny_result.read_text())
    assert {b["name"]: b["process_env"] for b in doc["builds"]} == {
        "caffe2-nnpack": {"OMP_WAIT_POLICY": "PASSIVE"}, "torch": {}}
    assert doc["environment"]["allocator"]["kind"] == "glibc-kept-heap"
    assert doc["fingerprint"]["software"]["allocator"] == "glibc-kept-heap"


def test_keep_heap_sets_both_glibc_thresholds():
    from harness.runner.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD, keep_heap  # noqa: PLC0415

    found = keep_heap()
    assert found == {"kind": "glibc-kept-heap", "glibc": found["glibc"], "mmap_threshold": MMAP_THRESHOLD,
                     "trim_threshold": TRIM_THRESHOLD}


def test_child_environment_puts_the_build_env_on_top_and_the_runtime_lib_only_on_devices(monkeypatch):
    from harness.runner.isolate import child_env  # noqa: PLC0415

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("TVM_USE_RUNTIME_LIB", raising=False)
    device = child_env({"OMP_WAIT_POLICY": "PASSIVE"}, runtime_only=True)
    local = child_env({}, runtime_only=False)
    assert device["OMP_WAIT_POLICY"] == "PASSIVE" and device["TVM_USE_RUNTIME_LIB"] == "1"
    assert local["OMP_WAIT_POLICY"] == "ACTIVE" and "TVM_USE_RUNTIME_LIB" not in local  # local children compile


def test_a_child_s_progress_lines_reach_the_parent_and_other_lines_pass_through(capsys):
    import io  # noqa: PLC0415

    from harness.runner.isolate import forward_progress  # noqa: PLC0415

    seen = []
    stream = io.StringIO('{"progress": ["torch", "measure", 2, 5]}\nwarning: slow\n{"progress": [1]}\n{not json\n')
    forward_progress(stream, lambda *a: seen.append(a))
    assert seen == [("torch", "measure", 2, 5)]
    assert capsys.readouterr().err == 'warning: slow\n{"progress": [1]}\n{not json\n'

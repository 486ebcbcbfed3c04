"""onnxruntime: the network exported to ONNX and run by the real ONNX Runtime (CPU provider),
each layer's time from ORT's profiler under its layer id, within tolerance of the fp32
reference on every small preset; unavailable, with the reason, where ONNX Runtime is not."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest

from harness.builds import NEEDS_TORCH, build_names
from harness.builds.base import BuildContext
from harness.builds.onnxruntime_ref import (MODEL_FILE, NodeTime, ONNXRuntimeBuild, ORTExecutable, charge_nodes,
                                            layer_keys, named_layer)
from harness.devices import load_devices
from harness.model import get_model
from harness.model.layers import CONV, LINEAR
from harness.model.weights import make_input, make_weights
from harness.runner.deps import ONNXRUNTIME_REQUIREMENT, device_requirements
from harness.runner.measure import Settings
from harness.runner.run import RunRequest, run
from tests.conftest import REPO

NAME = ONNXRuntimeBuild.name
PRESETS = ["unet-tiny", "resnet18-small", "mobilenet-v2-small", "squeezenet1.1-small", "shufflenet-v2-small"]
# ORT's CPU provider on x86 puts NCHWc layout reorders between some nodes: the only nodes that
# may carry no layer in their name.
LAYOUT_OPS = {"ReorderInput", "ReorderOutput"}


@pytest.fixture(scope="module", params=PRESETS)
def ort_run(request, device) -> tuple[str, dict]:
    """This build alone on the preset, in-process, two timed passes: (preset, build record)."""
    out = run(RunRequest(get_model(request.param), device, [NAME], Settings(warmup=0, repeats=2)))
    (record,) = out["builds"]
    return request.param, record


def test_runs_within_its_tolerance_with_every_layer_timed_under_its_id(ort_run):
    model, b = ort_run
    assert b["status"] == "ok", b["message"]
    assert b["max_rel_error"] <= b["tolerance"] == ONNXRuntimeBuild.tolerance
    assert [layer["id"] for layer in b["layers"]] == get_model(model).ids
    for layer in b["layers"]:
        assert len(layer["samples_ms"]) == 2 and min(layer["samples_ms"]) >= 0, layer["id"]
        if not layer["impl"].startswith("ort:fused into"):  # convolutions and GEMMs take microseconds
            if layer["op"] in (CONV, LINEAR):
                assert layer["median_ms"] > 0, layer
    assert b["e2e"]["median_ms"] > 0


def test_impls_name_ort_kernels_and_convolutions_run_mlas(ort_run):
    _, b = ort_run
    for layer in b["layers"]:
        assert layer["impl"].startswith("ort:"), layer
        if layer["op"] == CONV and not layer["impl"].startswith("ort:fused into"):
            assert "Conv(MLAS" in layer["impl"], layer  # Conv(MLAS NCHWc) on x86, FusedConv(MLAS) on ARM
    assert any("profiler's kernel times" in note for note in b["notes"])


def test_a_fused_residual_add_is_reported_where_it_went():
    """ORT fuses a ResNet block's Conv + Add + ReLU into one kernel: the add has no node of its
    own, is timed 0 and says which layer's kernel it runs in; that layer says it took it in."""
    device = load_devices(REPO / "devices.yaml").get("local")
    out = run(RunRequest(get_model("resnet18-small"), device, [NAME], Settings(warmup=0, repeats=1)))
    (b,) = out["builds"]
    assert b["status"] == "ok", b["message"]
    layers = {layer["id"]: layer for layer in b["layers"]}
    add, conv = layers["layer1.0.add"], layers["layer1.0.conv2"]
    assert add["impl"].startswith("ort:fused into layer1.0.conv2's "), add["impl"]
    assert add["samples_ms"] == [0.0] and add["median_ms"] == 0
    assert "(+layer1.0.add fused in)" in conv["impl"] and conv["median_ms"] > 0
    assert any("fused by ONNX Runtime" in note and "layer1.0.add" in note for note in b["notes"])


@pytest.fixture(scope="module")
def shufflenet_exe(device) -> ORTExecutable:
    table = get_model("shufflenet-v2-small")  # every op kind but the UNet's blocks, 117 layers
    return ONNXRuntimeBuild().compile(BuildContext(table, make_weights(table), device, {}, device.cores))


def test_every_profiled_node_is_charged_to_a_layer_and_the_layers_sum_within_the_pass(shufflenet_exe):
    exe = shufflenet_exe
    x = make_input(exe.table)
    keys = layer_keys(exe.table)
    done = exe.profiled_pass(x, time.perf_counter_ns)
    unnamed = {n.op for n in done.nodes if named_layer(n.node, keys) is None}
    assert unnamed <= LAYOUT_OPS, unnamed  # every other node's name carries its layer
    charges = charge_nodes(done.nodes, keys)
    assert sum(c.us for c in charges.values()) == sum(n.us for n in done.nodes) > 0  # nothing dropped
    t0 = time.perf_counter_ns()
    out, times = exe.run_timed(x, time.perf_counter_ns)
    wall = time.perf_counter_ns() - t0
    assert list(times) == exe.table.ids
    assert 0 < sum(times.values()) <= wall  # kernels of one run: within the call
    np.testing.assert_array_equal(out, exe.run(x))  # the same model, the same kernels


def test_two_slices_of_one_tensor_merged_into_one_split_are_reported_so(shufflenet_exe):
    """ORT merges a ShuffleNet unit's two channel slices into one Split, named after the second."""
    assert shufflenet_exe.impl("stage2.1.chunk1") == "ort:fused into stage2.1.chunk2's Split"
    assert shufflenet_exe.impl("stage2.1.chunk2").startswith("ort:Split") \
        and shufflenet_exe.impl("stage2.1.chunk2").endswith("(+stage2.1.chunk1 fused in)")


def test_charge_nodes_gives_an_inserted_node_to_the_layer_it_feeds():
    keys = {"a": "a", "b__1": "b.1"}
    nodes = [NodeTime("ReorderInput", "ReorderInput", 1, 3), NodeTime("/a/Conv", "Conv", 3, 10),
             NodeTime("ReorderOutput_token_2", "ReorderOutput", 1, 2), NodeTime("/b__1/Relu", "Relu", 1, 1),
             NodeTime("ReorderOutput_token_5", "ReorderOutput", 1, 4)]
    charges = charge_nodes(nodes, keys)
    assert (charges["a"].kernels, charges["a"].inserted, charges["a"].us) == (["Conv(MLAS)"], ["ReorderInput"], 13)
    assert (charges["b.1"].kernels, charges["b.1"].inserted, charges["b.1"].us) == \
        (["Relu"], ["ReorderOutput", "ReorderOutput"], 7)


HIDDEN_ORT = """
import json, sys
sys.modules["onnxruntime"] = None  # what Python does for a module it cannot import: ImportError
from harness.devices import load_devices
from harness.builds.onnxruntime_ref import ONNXRuntimeBuild
from harness.model import get_model
from harness.runner.measure import Settings
from harness.runner.run import RunRequest, run
devices = load_devices(sys.argv[1])
local, armv7 = devices.get("local"), devices.get("rasp3b")
(record,) = run(RunRequest(get_model("unet-tiny"), local, ["onnxruntime"], Settings(0, 1)))["builds"]
print(json.dumps({"local": ONNXRuntimeBuild().unavailable(local), "armv7": ONNXRuntimeBuild().unavailable(armv7),
                  "record": record}))
"""


def test_unavailable_where_onnxruntime_does_not_import():
    proc = subprocess.run([sys.executable, "-c", HIDDEN_ORT, str(REPO / "devices.yaml")], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["local"].startswith("ONNX Runtime is not installed") and ONNXRUNTIME_REQUIREMENT in found["local"]
    assert "no armv7 wheel" in found["armv7"]
    record = found["record"]
    assert record["status"] == "failed" and record["message"] == f"unavailable: {found['local']}"


def test_devices_get_onnxruntime_where_it_has_wheels_and_the_pins_agree():
    assert device_requirements("aarch64").onnxruntime == device_requirements("x86_64").onnxruntime \
        == [ONNXRUNTIME_REQUIREMENT]
    assert ONNXRUNTIME_REQUIREMENT in device_requirements("aarch64").all(with_torch=False)
    assert device_requirements("armv7l").onnxruntime == []
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert ONNXRUNTIME_REQUIREMENT in pyproject["project"]["dependencies"]


def test_it_is_a_default_build_whose_device_needs_no_torch():
    assert NAME in build_names() and NAME not in NEEDS_TORCH


def test_it_deploys_over_ssh_as_an_exported_model(sshd, tmp_path):
    """Over a real OpenSSH server: the host exports model.onnx, the device's runner loads it
    with ONNX Runtime and measures it."""
    from harness.deploy.ssh_run import run_over_ssh  # noqa: PLC0415

    device = load_devices(sshd.devices_file(tmp_path / "devices.yaml")).get("loopback")
    table = get_model("unet-tiny")
    out = run_over_ssh(device, table, [NAME], Settings(0, 2), {}, lambda *a: None)
    (b,) = out["builds"]
    assert b["status"] == "ok", b["message"]
    assert b["max_rel_error"] <= b["tolerance"]
    assert [layer["id"] for layer in b["layers"]] == table.ids
    assert "onnxruntime" in out["fingerprint"]["software"]
    ctx = BuildContext(table, make_weights(table), device, {}, device.cores)
    assert ONNXRuntimeBuild().export(ctx, tmp_path) == [tmp_path / MODEL_FILE]

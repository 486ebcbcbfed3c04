import textwrap

import pytest

from harness.devices import load_devices
from harness.devices.peaks import arm_flops_per_cycle, detect_host, x86_flops_per_cycle
from harness.devices.state import collect_state, state_warnings
from harness.errors import UserError
from tests.conftest import REPO, run_cli


def write(tmp_path, text):
    path = tmp_path / "devices.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_devices_file_loads_with_documented_peaks():
    reg = load_devices(REPO / "devices.yaml")
    assert reg.default == "local"
    assert reg.get("rasp3b").peak_gflops == {"fp32": pytest.approx(19.2), "fp16": pytest.approx(19.2),
                                             "int8": pytest.approx(38.4)}
    assert reg.get("rasp4").peak_gflops["fp32"] == pytest.approx(48.0)
    assert reg.get("rasp5").peak_gflops == {"fp32": pytest.approx(153.6), "fp16": pytest.approx(307.2),
                                            "int8": pytest.approx(614.4)}
    pi3 = reg.get("rasp3b")
    assert pi3.target["mtriple"] == "armv7l-linux-gnueabihf" and pi3.freq_ghz == 0.6
    assert pi3.host and pi3.user and pi3.key and pi3.python and not pi3.trust_on_first_use


def test_ssh_port_is_none_unless_given():
    """None lets ~/.ssh/config's Port apply; a given port, 22 included, is kept to win over it."""
    reg = load_devices(REPO / "devices.yaml")
    assert reg.get("rasp4").port is None and reg.get("rasp3b").port == 22
    assert reg.get("rasp4").proxy_jump is None


def test_local_device_is_detected_from_this_host():
    local = load_devices(REPO / "devices.yaml").get(None)
    host = detect_host()
    assert local.name == "local" and local.transport == "local"
    assert local.cores == host.cores and local.arch == host.arch
    assert local.peak_gflops["fp32"] == pytest.approx(host.cores * host.freq_ghz * host.flops_per_cycle[0])


def test_flop_rates_per_isa():
    assert x86_flops_per_cycle({"avx2", "fma", "avx"}) == (32, 32)
    assert x86_flops_per_cycle({"avx512f", "avx512_fp16", "avx2", "fma"}) == (64, 128)
    assert x86_flops_per_cycle({"sse2"}) == (8, 8)
    assert arm_flops_per_cycle("cortex-a76", set()) == (16, 32)
    assert arm_flops_per_cycle(None, {"asimd", "asimdhp"}) == (8, 16)


BAD_FILES = [
    ("devices: [1, 2]", "expected a top-level 'devices:' mapping"),
    ("devices:\n  pi: {transport: ssh, host: h, arch: armv7l, cpu: cortex-a53, cores: four, freq_ghz: 1, target: {kind: llvm}}",
     "device 'pi': field 'cores': expected a positive integer, got 'four'"),
    ("devices:\n  pi: {transport: ssh, arch: aarch64, cpu: cortex-a72, cores: 4, freq_ghz: 1.5, target: {kind: llvm}}",
     "device 'pi': field 'host': missing"),
    ("devices:\n  pi: {transport: carrier-pigeon}", "device 'pi': field 'transport': expected one of local, ssh, rpc"),
    ("devices:\n  pi: {transport: ssh, host: h, arch: aarch64, cpu: mystery, cores: 4, freq_ghz: 1, target: {kind: llvm}}",
     "device 'pi': field 'flops_per_cycle': missing"),
    ("devices:\n  pi: {transport: ssh, host: h, arch: aarch64, cpu: cortex-a72, cores: auto, freq_ghz: 1, target: {kind: llvm}}",
     "device 'pi': field 'cores': 'auto' is only possible for a local device"),
    ("devices:\n  local: {colour: blue}", "device 'local': field 'colour': unknown field"),
    ("devices:\n  local: {port: 70000}", "device 'local': field 'port': expected a TCP port"),
    ("devices:\n  local: {proxy_jump: 'gw,,b'}", "device 'local': field 'proxy_jump': expected jump hosts"),
    ("devices:\n  local: {user: 'pi pi'}", "device 'local': field 'user': expected a user name without spaces"),
    ("default: pi\ndevices:\n  local: {}", "default device 'pi' is not defined"),
    ("devices:\n  local: {\n", "not valid YAML at line"),
]


@pytest.mark.parametrize("text,message", BAD_FILES)
def test_bad_devices_files_name_file_entry_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_devices(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_bad_devices_file_via_cli_is_one_line_and_exit_2(tmp_path):
    path = write(tmp_path, BAD_FILES[1][0])
    for args in (["devices", "list"], ["run", "--model", "unet-tiny"]):
        proc = run_cli(*args, "--devices-file", str(path))
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "field 'cores'" in lines[0] and "Traceback" not in proc.stderr


def test_missing_devices_file(tmp_path):
    proc = run_cli("devices", "list", "--devices-file", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "devices file not found" in proc.stderr


def test_devices_list_shows_every_device_and_peak():
    proc = run_cli("devices", "list")
    assert proc.returncode == 0, proc.stderr
    for name in ("local (default)", "rasp3b", "rasp4", "rasp5", "19.2", "307.2"):
        assert name in proc.stdout


def test_state_is_collected_and_warnings_follow_it():
    state = collect_state().to_json()
    assert state["load_1m"] >= 0
    assert state["freq_mhz"] is None or all(f > 0 for f in state["freq_mhz"])
    pinned = {**state, "freq_fixed": True, "load_1m": 0.0, "freq_mhz": [600.0], "throttled": "0x0"}
    assert state_warnings(pinned, pinned, 4) == []
    changed = {**pinned, "freq_mhz": [1200.0]}
    assert any("frequency changed" in w for w in state_warnings(pinned, changed, 4))
    assert any("not fixed" in w for w in state_warnings({**pinned, "freq_fixed": False}, None, 4))
    assert any("throttl" in w for w in state_warnings(pinned, {**pinned, "throttled": "0x50005"}, 4))


def test_measured_clock_is_plausible_and_recorded_where_the_os_cannot_say():
    from harness.devices.clock import measure_clock_mhz

    mhz = measure_clock_mhz(1)
    assert mhz is not None and 200 < mhz < 7000
    state = collect_state().to_json()
    if state["freq_source"] != "cpufreq":
        assert state["clock_mhz_measured"] and state["clock_mhz_measured"] > 200


def test_a_clock_far_from_the_peaks_assumption_is_warned_about(tiny_result):
    import json

    from harness.report.table import run_warnings

    doc = json.loads(tiny_result.read_text())
    # As a result file from before the peak basis: its % of peak used the nominal clock
    # (tests/test_peak_measured.py has the basis a new run records).
    del doc["device"]["peak"]
    doc["system"]["before"]["clock_mhz_measured"] = 1000 * doc["device"]["freq_ghz"] * 1.3
    assert any("the peak assumes" in w for w in run_warnings(doc))
    doc["system"]["before"]["clock_mhz_measured"] = 1000 * doc["device"]["freq_ghz"]
    assert not any("the peak assumes" in w for w in run_warnings(doc))


def test_setup_installs_the_runtime_packages_of_deps_py():
    """`devices setup` installs what harness/runner/deps.py lists: numpy, pyyaml, the TVM runtime
    with the RPC extras its server imports, ONNX Runtime, and torch unless left out; armv7 gets
    no wheels."""
    from harness.devices.setup import default_packages  # noqa: PLC0415

    devices = load_devices(REPO / "devices.yaml")
    pi5 = default_packages(devices.get("rasp5"))
    for package in ("numpy", "pyyaml", "apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post0",
                    "cloudpickle", "psutil", "tornado", "onnxruntime==1.32.0", "torch==2.9.1"):
        assert package in pi5
    assert not any(p.startswith("torch") for p in default_packages(devices.get("rasp5"), with_torch=False))
    assert default_packages(devices.get("rasp3b")) == ["numpy", "pyyaml"]


def test_setup_no_torch_flag_is_accepted_and_bad_device_is_one_line():
    proc = run_cli("devices", "setup", "no-such-board", "--no-torch")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr

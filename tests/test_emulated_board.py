"""Every build on an emulated Raspberry Pi (qemu-user, a Debian arm64 userland, PyPI's aarch64
wheels) over a real loopback sshd, and each kind of build over a real TVM RPC farm: outputs
within tolerance of the host's reference, the same layer ids as a local run, results marked
emulated; a Cortex-A72 board where torch's ARMv8.1 atomics crash only the torch builds; a
board without torch.

unet-tiny with one warm-up and three repeats: times under emulation mean nothing (they are
never compared with a Pi's), only the mechanics are asserted. Each board is built once per
session (tests/board.py) and each run shared by the tests that read it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from markupsafe import escape

from harness.builds import NEEDS_TORCH, build_names
from harness.devices.config import EMULATED_LABEL
from harness.results.fingerprint import hardware_hash
from tests.board import EmulatedBoard, cli, notorch_board, pi4_board, pi5_board  # noqa: F401
from tests.sshd import free_port, wait_for_port
from tests.test_farm import _boards_registered, _start, _stop

ALL_BUILDS = build_names()
TORCH_BUILDS = sorted(NEEDS_TORCH)
# The farm ships what the SSH path stages (deploy.ssh_run.stage), so one build of each kind of
# artifact stands for all: a TVM module calling NNPACK, a PyTorch build, an ONNX model. (Every
# build on the farm took 81 s of the board's time under qemu; the SSH test runs them all.)
FARM_BUILDS = ["caffe2-nnpack", "tvm-nnpack", "onnxruntime"]
RUN_TIMEOUT_S = 1800


def run_on(board_devices: Path, device: str, out: Path, builds: list[str]) -> subprocess.CompletedProcess:
    return cli("run", "--devices-file", str(board_devices), "--device", device, "--model", "unet-tiny",
               "--builds", ",".join(builds), "--warmup", "1", "--repeats", "3", "--output", str(out),
               timeout=RUN_TIMEOUT_S)


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in doc["builds"]}


def layer_ids(build: dict[str, Any]) -> list[str]:
    return [layer["id"] for layer in build["layers"]]


@pytest.fixture(scope="session")
def pi5_ssh(pi5_board: EmulatedBoard, tmp_path_factory) -> tuple[dict[str, Any], str]:
    """All five builds on the Pi 5 over SSH: (result, stdout)."""
    out = tmp_path_factory.mktemp("pi5") / "ssh.json"
    proc = run_on(pi5_board.devices_file, pi5_board.name, out, ALL_BUILDS)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stdout


def assert_builds_match_reference(doc: dict[str, Any], local: dict[str, Any], builds: list[str] = ALL_BUILDS) -> None:
    """Every build ok, within its tolerance of the host's fp32 reference, with the local run's ids."""
    local_ids = layer_ids(local["builds"][0])
    assert list(by_name(doc)) == builds
    for b in doc["builds"]:
        assert b["status"] == "ok", (b["name"], b["message"])
        assert b["max_rel_error"] <= b["tolerance"], b["name"]
        assert layer_ids(b) == local_ids, b["name"]


def test_every_build_over_ssh_on_the_pi5(pi5_ssh, tiny_result: Path):
    doc, _ = pi5_ssh
    assert_builds_match_reference(doc, json.loads(tiny_result.read_text()))
    assert doc["device"]["arch"] == "aarch64" and doc["device"]["cpu"] == "cortex-a76"
    # The runner ran on the board: its fingerprint is the emulated A76's /proc/cpuinfo, not the host's.
    assert doc["fingerprint"]["hardware"]["arch"] == "aarch64"
    assert doc["fingerprint"]["hardware"]["cpu"]["id"]["CPU part"] == "0xd0b"
    # The board's versions, although its parent runner imports neither torch nor TVM.
    software, env = doc["fingerprint"]["software"], doc["environment"]
    assert {"torch", "tvm", "nnpack"} <= set(software), software
    assert (env["torch"], env["tvm"]) == (software["torch"], software["tvm"])


def test_emulated_results_are_marked_and_never_compared_with_a_real_device(pi5_ssh, tmp_path: Path):
    doc, stdout = pi5_ssh
    assert doc["device"]["emulated"] is True
    assert EMULATED_LABEL in " ".join(stdout.split())  # the terminal table's title (rich may wrap it)
    hardware = doc["fingerprint"]["hardware"]
    assert hardware["emulated"] is True
    # History and verdicts group runs by hardware_hash: the same board, not emulated, is another machine.
    assert doc["fingerprint"]["hardware_hash"] == hardware_hash(hardware)
    assert hardware_hash({**hardware, "emulated": False}) != doc["fingerprint"]["hardware_hash"]
    result = tmp_path / "pi5.json"
    result.write_text(json.dumps(doc))
    proc = cli("report", str(result), "--output-dir", str(tmp_path / "report"), "--results-root", str(tmp_path / "none"),
              timeout=600)
    assert proc.returncode == 0, proc.stderr
    page = next((tmp_path / "report").rglob("index.html")).read_text()
    assert 'id="emulated-notice"' in page and str(escape(EMULATED_LABEL)) in page


@pytest.fixture
def board_farm(pi5_board: EmulatedBoard, tmp_path: Path) -> Iterator[Path]:
    """A tracker on the host and one harness board server running ON the emulated Pi 5;
    yields a devices file with its rpc entry."""
    port, key = free_port(), "pi5emu"
    procs = [_start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                     "--port-end", str(port + 1)], tmp_path / "tracker.log")]
    wait_for_port(port, timeout_s=60)  # a board that finds no tracker retries only every 5 s
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs.append(subprocess.Popen([pi5_board.python, "-m", "harness.farm.server", "--tracker", f"127.0.0.1:{port}",
                                   "--key", key, "--host", "127.0.0.1", "--port", str(free_port()),
                                   "--name", "pi5-emulated-board"], env=env, stdout=open(tmp_path / "board.log", "ab"),
                                  stderr=subprocess.STDOUT, start_new_session=True))
    try:
        deadline = time.monotonic() + 300  # `import tvm` under qemu on a busy 2-core host
        while _boards_registered(port, key) < 1:
            assert time.monotonic() < deadline, (tmp_path / "board.log").read_text()[-2000:]
            time.sleep(1)
        keep = ("arch", "cpu", "cpu_model", "cores", "freq_ghz", "cross_compiler", "target", "emulated")
        entry = {"transport": "rpc", "tracker": {"host": "127.0.0.1", "port": port, "key": key},
                 "command_timeout_s": RUN_TIMEOUT_S, **{k: pi5_board.entry[k] for k in keep}}
        devices = tmp_path / "devices.yaml"
        devices.write_text(yaml.safe_dump({"default": "pi5-farm", "devices": {"pi5-farm": entry}}))
        yield devices
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_each_kind_of_build_over_the_farm_on_the_pi5(board_farm: Path, tiny_result: Path, tmp_path: Path):
    out = tmp_path / "farm.json"
    proc = run_on(board_farm, "pi5-farm", out, FARM_BUILDS)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["device"]["transport"] == "rpc" and doc["device"]["emulated"] is True
    assert_builds_match_reference(doc, json.loads(tiny_result.read_text()), FARM_BUILDS)
    assert all(b["board"] == "pi5-emulated-board" for b in doc["builds"])


def test_a72_torch_crash_is_recorded_and_tvm_builds_still_run(pi4_board: EmulatedBoard, tmp_path: Path):
    out = tmp_path / "pi4.json"
    proc = run_on(pi4_board.devices_file, pi4_board.name, out, [*TORCH_BUILDS, "tvm"])
    assert proc.returncode == 0, proc.stderr  # the run is written although two builds crashed
    builds = by_name(json.loads(out.read_text()))
    for name in TORCH_BUILDS:
        assert builds[name]["status"] == "failed"
        message = builds[name]["message"]
        assert "SIGILL" in message and "ARMv8.1 atomics" in message and "CPU-only" in message, message
    assert builds["tvm"]["status"] == "ok" and builds["tvm"]["max_rel_error"] <= builds["tvm"]["tolerance"]


def test_board_without_torch_runs_the_tvm_builds(notorch_board: EmulatedBoard, tmp_path: Path):
    out = tmp_path / "notorch.json"
    proc = run_on(notorch_board.devices_file, notorch_board.name, out, ["tvm", "fp16-winograd", *TORCH_BUILDS])
    assert proc.returncode == 0, proc.stderr
    builds = by_name(json.loads(out.read_text()))
    for name in ("tvm", "fp16-winograd"):
        assert builds[name]["status"] == "ok", builds[name]["message"]
        assert builds[name]["max_rel_error"] <= builds[name]["tolerance"]
    for name in TORCH_BUILDS:
        assert builds[name]["status"] == "failed"
        assert builds[name]["message"].startswith("unavailable: torch is not installed on the device")
    software = json.loads(out.read_text())["fingerprint"]["software"]
    assert "tvm" in software and "torch" not in software and "nnpack" not in software, software

"""`harness tune --device` on the emulated Raspberry Pi 5: candidates compiled on the host,
timed on the board through TVM's RPC (behind an SSH port forward), written to the device's
databases and applied by the next build. The board's times are qemu's: these tests assert the
mechanics, never speed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.sshd import REPO, free_port

pytest.importorskip("tvm")

BOARD_DIR = Path(os.environ.get("HARNESS_BOARD_DIR", REPO / ".board"))
TRIALS = 2  # per workload: for the hybrid, `tvm` and one NNPACK candidate


def harness(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="session")
def board() -> tuple[Path, str]:
    """The emulated Pi 5 served over a loopback sshd: (devices file, device name).
    Built once and cached under BOARD_DIR (about 1 GB)."""
    done = harness("devices", "emulate", "--dir", str(BOARD_DIR), timeout=1800)
    if done.returncode != 0:
        pytest.skip(f"no emulated board here: {done.stderr.strip().splitlines()[-1:]}")
    path = BOARD_DIR / "cortex-a76" / "devices.yaml"
    return path, yaml.safe_load(path.read_text())["default"]


# Unfinished: on the emulated board the RPC session never answers (the server binds and
# accepts, then its forked session process hangs under qemu-user; see the helper's report).
@pytest.mark.skip(reason="RPC session on the qemu-user board hangs after accept; under investigation")
def test_tune_on_the_board_then_the_build_applies_it(board, tmp_path):
    from harness.deploy.ssh_run import run_over_ssh
    from harness.devices import load_devices
    from harness.model import get_model
    from harness.runner.measure import Settings
    from harness.tuning.tasks import unique_conv_layers

    devices_file, name = board
    tuning = tmp_path / "tuning"
    done = harness("tune", "--devices-file", str(devices_file), "--device", name, "--model", "unet-tiny",
                   "--builds", "tvm-nnpack", "--trials", str(TRIALS), "--tuning-dir", str(tuning))
    assert done.returncode == 0, done.stderr
    assert "timing candidates on pi5-emulated over SSH" in done.stdout

    table = get_model("unet-tiny")
    workloads = {layer.workload_key() for layer in unique_conv_layers(table)}
    conv = json.loads((tuning / name / "tvm-conv2d.json").read_text())
    hybrid = json.loads((tuning / name / "tvm-nnpack.json").read_text())
    assert conv["target"]["mtriple"] == "aarch64-linux-gnu"  # cross-compiled for the board
    assert set(conv["records"]) == set(hybrid["records"]) == workloads
    for record in conv["records"].values():
        assert len(record["candidates"]) == TRIALS
        assert any(c["samples_ms"] for c in record["candidates"]), record
    for record in hybrid["records"].values():  # the choice table, measured on the board
        impls = {c["params"]["impl"]: c for c in record["candidates"]}
        assert set(impls) == {"tvm", "nnpack:ft8x8/compute"}
        assert impls["nnpack:ft8x8/compute"]["samples_ms"], impls  # NNPACK ran on the board

    # resumable: the same budget again measures nothing new
    again = harness("tune", "--devices-file", str(devices_file), "--device", name, "--model", "unet-tiny",
                    "--builds", "tvm-nnpack", "--trials", str(TRIALS), "--tuning-dir", str(tuning))
    assert again.returncode == 0, again.stderr
    assert json.loads((tuning / name / "tvm-nnpack.json").read_text())["records"] == hybrid["records"]

    # the next build, run on the board, takes its kernels and choices from these databases
    from harness.tuning.database import load_database
    from harness.builds.tvm_common import target_dict

    device = load_devices(devices_file).get(name)
    choices = load_database(name, "tvm-nnpack", target_dict(device), tuning)
    out = run_over_ssh(device, table, ["tvm-nnpack"], Settings(0, 1),
                       {"tvm-nnpack": {"tuning_dir": tuning}}, lambda *a: None)
    build = out["builds"][0]
    assert build["status"] == "ok", build
    impls = {layer["id"]: layer["impl"] for layer in build["layers"]}
    for layer in table.convs:
        assert impls[layer.id] == choices.best_params(layer.workload_key())["impl"]  # never "tvm:untuned"


def test_unreachable_device_is_one_clear_line(tmp_path):
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"default": "gone", "devices": {"gone": {
        "transport": "ssh", "host": "127.0.0.1", "port": free_port(), "user": "pi", "arch": "aarch64",
        "cores": 4, "freq_ghz": 2.4, "flops_per_cycle": {"fp32": 16, "fp16": 32}, "cross_compiler": "aarch64-linux-gnu-g++", "connect_timeout_s": 3,
        "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76", "mattr": ["+neon"]}}}}))
    done = harness("tune", "--devices-file", str(devices), "--device", "gone", "--model", "unet-tiny",
                   "--builds", "tvm", "--trials", "1", "--tuning-dir", str(tmp_path / "tuning"), timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: device 'gone': cannot connect"), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "tuning").exists()

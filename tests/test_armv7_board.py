"""The study's Raspberry Pi 3B on a 32-bit OS, emulated (qemu-arm, a Debian bookworm armhf
userland with Debian's python3/numpy/yaml and the TVM runtime cross-built by
scripts/build-armv7-runtime.sh), reached over a real loopback sshd: `tvm` and `fp16-winograd`
run there within tolerance of the host's fp32 reference; the builds that need torch (none exists
for armv7) say so.

The runtime build takes ~10 min on 2 cores, too long for CI: without .board/armv7-runtime the
board tests skip with the command that builds it. unet-tiny, one warm-up, three repeats: under
emulation only the mechanics and the numbers' accuracy mean anything, not the times.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.board import BOARD_DIR, cli

RUNTIME = BOARD_DIR / "armv7-runtime"
BUILD_COMMAND = "scripts/build-armv7-runtime.sh .board/armv7-runtime"
BUILDS = ["tvm", "fp16-winograd", "tvm-nnpack", "caffe2-nnpack", "torch"]
TORCH_MISSING = "unavailable: torch is not installed on the device"


def cannot_emulate_armv7() -> str | None:
    for cmd, package in (("qemu-arm", "qemu-user"), ("mmdebstrap", "mmdebstrap")):
        if shutil.which(cmd) is None:
            return f"{cmd} not found (Debian package {package}; scripts/setup.sh --dev installs it)"
    if not Path("/usr/sbin/sshd").exists():
        return "/usr/sbin/sshd not found (openssh-server; scripts/setup.sh --dev installs it)"
    if not (RUNTIME / "BUILD-INFO").exists():
        return f"no armv7 TVM runtime in {RUNTIME} (a ~10 min build); build it with: {BUILD_COMMAND}"
    return None


@pytest.fixture(scope="module")
def armv7_run(tmp_path_factory) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every build of unet-tiny on the emulated Pi 3B over SSH: (result, device entry)."""
    if reason := cannot_emulate_armv7():
        pytest.skip(reason)
    proc = cli("devices", "emulate", "--board", "pi3-armv7", "--dir", str(BOARD_DIR), timeout=600)
    assert proc.returncode == 0, proc.stderr
    devices = Path(next(x for x in proc.stdout.splitlines() if x.startswith("devices file: "))
                   .removeprefix("devices file: "))
    doc = yaml.safe_load(devices.read_text())
    try:
        out = tmp_path_factory.mktemp("armv7") / "run.json"
        run = cli("run", "--devices-file", str(devices), "--device", doc["default"], "--model", "unet-tiny",
                  "--builds", ",".join(BUILDS), "--warmup", "1", "--repeats", "3", "--output", str(out),
                  timeout=1200)
        assert run.returncode == 0, run.stderr
        yield json.loads(out.read_text()), doc["devices"][doc["default"]]
    finally:
        cli("devices", "emulate", "--board", "pi3-armv7", "--dir", str(BOARD_DIR), "--stop", timeout=60)


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in doc["builds"]}


def test_tvm_builds_run_on_the_armv7_board_within_tolerance(armv7_run):
    doc, entry = armv7_run
    builds = by_name(doc)
    assert list(builds) == BUILDS
    for name in ("tvm", "fp16-winograd"):
        b = builds[name]
        assert b["status"] == "ok", (name, b["message"])
        assert b["max_rel_error"] <= b["tolerance"], name
    # The runner ran on the emulated armv7 board, not the host: its Python saw an armv7l machine
    # and the Pi 3B's Cortex-A53 in /proc/cpuinfo; the module was cross-compiled hard-float.
    assert doc["fingerprint"]["hardware"]["arch"] == "armv7l"
    assert doc["fingerprint"]["hardware"]["cpu"]["id"]["CPU part"] == "0xd03"
    assert doc["device"]["emulated"] is True and doc["device"]["arch"] == "armv7l"
    assert entry["target"]["mtriple"] == "armv7l-linux-gnueabihf" and entry["target"]["mfloat-abi"] == "hard"


def test_builds_needing_torch_say_so_on_the_armv7_board(armv7_run):
    doc, _ = armv7_run
    builds = by_name(doc)
    for name in ("caffe2-nnpack", "torch"):
        assert builds[name]["status"] == "failed" and builds[name]["message"].startswith(TORCH_MISSING), name
    # tvm-nnpack's NNPACK layers call libtorch_cpu's NNPACK: without torch the build is unavailable.
    nnpack = builds["tvm-nnpack"]
    assert nnpack["status"] == "failed"
    assert nnpack["message"].startswith("unavailable: PyTorch is not installed"), nnpack["message"]
    assert "docs/pi-setup.md for armv7" in nnpack["message"]


def test_armv7_board_without_the_runtime_names_the_build_command(tmp_path: Path):
    proc = cli("devices", "emulate", "--board", "pi3-armv7", "--dir", str(tmp_path), timeout=60)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "no armv7 TVM runtime" in lines[0] and "scripts/build-armv7-runtime.sh" in lines[0]


def test_unknown_board_is_one_clear_line():
    proc = cli("devices", "emulate", "--board", "pi9", timeout=60)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown --board 'pi9'" in lines[0] and "pi3-armv7" in lines[0], proc.stderr


def test_build_script_refuses_missing_host_tvm(tmp_path: Path):
    """Bad input to the build script: one line naming the problem, non-zero exit, nothing built."""
    done = subprocess.run(["bash", str(BOARD_DIR.parent / "scripts" / "build-armv7-runtime.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOST_PY": "/bin/false"},
                          timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "build-armv7-runtime: /bin/false has no apache-tvm==0.27.0.post1 (set HOST_PY to a Python that has it)"]

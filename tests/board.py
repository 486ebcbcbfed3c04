"""Emulated Raspberry Pi boards for tests, made by `harness devices emulate` (the command users
run) and cached in .board/ (git-ignored): the userland is built once, each further board is a
hard-linked copy made in seconds. The boards' sshd is stopped at the end of the session.

Usable by any test module: `from tests.board import pi5_board  # noqa: F401` (and the others).
Tests skip, with the reason, only when the host cannot emulate at all (no qemu-user, no
mmdebstrap, no sshd, or a qemu that does not run); a board that fails to build fails the test.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from harness.builds import NEEDS_TORCH
from tests.conftest import run_cli as cli

REPO = Path(__file__).resolve().parents[1]
BOARD_DIR = REPO / ".board"
# Building the first board downloads ~150 MB of wheels; later boards reuse the userland.
BUILD_TIMEOUT_S = 1200


@dataclass(frozen=True)
class EmulatedBoard:
    name: str
    devices_file: Path
    entry: dict[str, Any]  # its devices.yaml entry

    @property
    def python(self) -> str:
        return self.entry["python"]


def cannot_emulate() -> str | None:
    """Why this host cannot run an emulated board, or None."""
    from harness.devices.emulate import HOST_TOOLS  # noqa: PLC0415

    for cmd, package in HOST_TOOLS.items():
        if shutil.which(cmd) is None:
            return f"{cmd} not found (Debian package {package}; scripts/setup.sh --dev installs it)"
    if not Path("/usr/sbin/sshd").exists():
        return "/usr/sbin/sshd not found (openssh-server; scripts/setup.sh --dev installs it)"
    if subprocess.run(["qemu-aarch64", "--version"], capture_output=True).returncode != 0:
        return "qemu-aarch64 does not run on this host"
    return None


def emulate(cpu: str, torch: bool = True) -> EmulatedBoard:
    if reason := cannot_emulate():
        pytest.skip(reason)
    flags = [] if torch else ["--no-torch"]
    proc = cli("devices", "emulate", "--cpu", cpu, "--dir", str(BOARD_DIR), *flags, timeout=BUILD_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("devices file: "))
    path = Path(line.removeprefix("devices file: "))
    doc = yaml.safe_load(path.read_text())
    return EmulatedBoard(doc["default"], path, doc["devices"][doc["default"]])


def stop(cpu: str, torch: bool = True) -> None:
    cli("devices", "emulate", "--cpu", cpu, "--dir", str(BOARD_DIR), *([] if torch else ["--no-torch"]),
        "--stop", timeout=60)


def _board(cpu: str, torch: bool = True) -> Iterator[EmulatedBoard]:
    board = emulate(cpu, torch)
    yield board
    stop(cpu, torch)


@pytest.fixture(scope="session")
def pi5_board() -> Iterator[EmulatedBoard]:
    """An emulated Raspberry Pi 5 (Cortex-A76) with torch, served over a loopback sshd."""
    yield from _board("cortex-a76")


# Why the A72 board gets a fake crash, and what is real about it. PyPI's torch 2.13.0 for
# aarch64 (the wheel that SIGILLs on an A72, in libnvpl_blas_core's `ldaddal`) is the CUDA build:
# ~3 GB to download on every CI run, over the budget. The board's torch 2.9.1 CPU wheel uses
# outline atomics (LSE only where HWCAP says so), so it runs on an A72. So the torch build
# processes of this board execute that very instruction, `ldaddal`, as torch 2.13's first
# convolution does: the SIGILL is qemu's Cortex-A72 refusing a real ARMv8.1 instruction, and
# the isolation, the signal name and the hint are the harness's real ones. Only what triggers
# it is a test fake, installed into this board's own site directory (not the shared userland)
# and removed at the end of the session.
LSE_FAKE = """\"\"\"TEST FAKE (tests/board.py): run an ARMv8.1 `ldaddal` in per-build processes that import torch.\"\"\"
import builtins, ctypes, mmap, sys

_import = builtins.__import__
TORCH_BUILDS = {torch_builds!r}
# ldaddal w1, w2, [x0]; ret
CODE = bytes.fromhex("0200e1b8c0035fd6")


def _ldaddal():
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(CODE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    ctypes.CFUNCTYPE(None, ctypes.c_void_p)(addr)(ctypes.addressof(ctypes.c_int(0)))


def _hook(name, *args, **kwargs):
    # Only in the process of a build that needs torch: other builds' processes may import torch
    # too, but torch 2.13 crashes on its first convolution, which only those builds run. Before
    # the import rather than after: the same crash, without a minute of importing torch in qemu.
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv[:-1] else None
    if name.split(".")[0] == "torch" and only in TORCH_BUILDS:
        _ldaddal()
    return _import(name, *args, **kwargs)


builtins.__import__ = _hook
"""


def lse_fake_files(board: EmulatedBoard) -> list[Path]:
    from harness.devices.emulate import site_dir  # noqa: PLC0415

    site = site_dir(Path(board.python).parents[1] / "rootfs")
    return [site / "harness_test_lse.py", site / "harness_test_lse.pth"]


@pytest.fixture(scope="session")
def pi4_board() -> Iterator[EmulatedBoard]:
    """An emulated Raspberry Pi 4 (Cortex-A72, ARMv8.0: no LSE atomics) whose torch builds run an
    ARMv8.1 atomic instruction (see LSE_FAKE)."""
    for board in _board("cortex-a72"):
        module, pth = lse_fake_files(board)
        module.write_text(LSE_FAKE.replace("{torch_builds!r}", repr(sorted(NEEDS_TORCH))))
        pth.write_text("import harness_test_lse\n")
        try:
            yield board
        finally:
            module.unlink(missing_ok=True)
            pth.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def notorch_board() -> Iterator[EmulatedBoard]:
    """An emulated Pi 5 with numpy and the TVM runtime only."""
    yield from _board("cortex-a76", torch=False)

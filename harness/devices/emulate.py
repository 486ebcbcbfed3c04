"""`harness devices emulate`: an emulated Raspberry Pi (aarch64) on this host, reached over SSH.

The board is built from Debian packages and PyPI only, without binfmt_misc:
- a Debian arm64 userland (mmdebstrap --variant=extract: no package scripts run, so no
  emulation is needed to build it);
- the runtime wheels (harness.runner.deps) installed by the HOST's pip for the board's Python
  (--only-binary=:all: and every aarch64 platform tag named, since pip does not widen one tag);
- an ARM-format /proc/cpuinfo inside the rootfs: qemu-user's -L looks absolute paths up under
  the rootfs first, and without it the guest sees the host's x86 cpuinfo (torch segfaults on
  it, and the probe would report the wrong board);
- a shell-wrapper `python` running `qemu-aarch64 -cpu CPU -L ROOTFS ROOTFS/usr/bin/python3`,
  and a .pth setting sys.executable to that wrapper: without binfmt a child process cannot
  exec an aarch64 ELF, so every `sys.executable` subprocess must go through qemu again.

The userland with its wheels is built once per requirement set (.board/base-<key>/) and each
board (one per CPU, with or without torch) is a hard-linked copy of it with its own cpuinfo,
wrapper and .pth. scripts/loopback-sshd.sh serves it on 127.0.0.1; its devices.yaml entry says
`emulated: true`, which results and reports carry: its times are qemu's, not a Pi's.

`--board pi3-armv7`: the study's Raspberry Pi 3B on a 32-bit OS, under qemu-arm. PyPI has no
armv7 wheels, so its userland is Debian bookworm armhf with Debian's python3, python3-numpy and
python3-yaml, plus the TVM runtime cross-built by scripts/build-armv7-runtime.sh (no torch).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from harness.errors import UserError
from harness.runner.deps import TORCH_BY_ARCH, device_requirements

REPO = Path(__file__).resolve().parents[2]
BOARD_DIR = REPO / ".board"
SSHD_SCRIPT = REPO / "scripts" / "loopback-sshd.sh"
# Userland: python3 and what the wheels link against beyond their own bundled libraries.
DEB_PACKAGES = ["python3", "libstdc++6", "libgomp1", "zlib1g"]
# torch's pure-Python dependencies. torch is installed with --no-deps because pip evaluates
# environment markers for the HOST: its `platform_machine == "x86_64"` CUDA packages would
# come along for an aarch64 target.
TORCH_DEPS = ["filelock", "typing-extensions>=4.10.0", "sympy>=1.13.3", "networkx>=2.5.1", "jinja2", "fsspec>=0.8.5"]
GLIBC_TAGS = ["manylinux2014_aarch64"] + [f"manylinux_2_{v}_aarch64" for v in range(17, 40)]
HOST_TOOLS = {"mmdebstrap": "mmdebstrap", "qemu-aarch64": "qemu-user"}  # command -> Debian package


@dataclass(frozen=True)
class BoardCPU:
    """What the emulated board reports and how its device entry describes it."""
    name: str  # qemu's -cpu and LLVM's -mcpu
    part: str  # /proc/cpuinfo "CPU part"
    variant: str
    revision: int
    features: str
    model: str  # /proc/device-tree/model
    device_name: str
    freq_ghz: float
    mattr: tuple[str, ...]
    qemu_cpu: str = ""  # qemu's -cpu when it has no model of this core (default: name)


CPUS = {
    "cortex-a76": BoardCPU("cortex-a76", "0xd0b", "0x4", 1,
                           "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                           "lrcpc dcpop asimddp", "Raspberry Pi 5 Model B Rev 1.0", "pi5-emulated", 2.4,
                           ("+neon", "+fullfp16")),
    # ARMv8.0: no LSE atomics (`atomics`), no fp16 arithmetic.
    "cortex-a72": BoardCPU("cortex-a72", "0xd08", "0x0", 3, "fp asimd evtstrm crc32 cpuid",
                           "Raspberry Pi 4 Model B Rev 1.4", "pi4-emulated", 1.5, ("+neon",)),
}


@dataclass(frozen=True)
class Board:
    dir: Path
    cpu: BoardCPU
    torch: bool
    arch: str = "aarch64"  # the device entry's arch: aarch64, or armv7l (--board pi3-armv7)

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def python(self) -> Path:
        return self.dir / "bin" / "python"

    @property
    def ssh_dir(self) -> Path:
        return self.dir / "ssh"

    @property
    def devices_file(self) -> Path:
        return self.dir / "devices.yaml"

    @property
    def name(self) -> str:
        # An armv7 board never has torch (no wheel): its name needs no "-notorch".
        return self.cpu.device_name + ("" if self.torch or self.arch == "armv7l" else "-notorch")


Log = Callable[[str], None]


def cpu_spec(name: str) -> BoardCPU:
    if name not in CPUS:
        raise UserError(f"unknown --cpu {name!r}; emulated boards: {', '.join(CPUS)}")
    return CPUS[name]


def check_host_tools() -> dict[str, str]:
    found = {cmd: shutil.which(cmd) for cmd in HOST_TOOLS}
    missing = [cmd for cmd, path in found.items() if path is None]
    if missing:
        pkgs = " ".join(HOST_TOOLS[c] for c in missing)
        raise UserError(f"{', '.join(missing)} not found; install it: apt-get install --no-install-recommends "
                        f"{pkgs} (scripts/setup.sh --dev does)")
    return found  # type: ignore[return-value]


def host_suite() -> str:
    """The host's Debian release: the board's python3 is then the host's Python version."""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise UserError("cannot tell the host's Debian release from /etc/os-release")


def board_requirements() -> list[str]:
    """Everything but torch (installed --no-deps, see TORCH_DEPS)."""
    req = device_requirements("aarch64")
    return req.base + req.tvm + req.onnxruntime + TORCH_DEPS


def base_key(suite: str) -> str:
    spec = json.dumps([suite, DEB_PACKAGES, board_requirements(), TORCH_BY_ARCH["aarch64"]])
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def _run(argv: list[str], what: str, log_path: Path) -> None:
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
        raise UserError(f"{what} failed (exit {done.returncode}): {tail[0] if tail else ''} (log: {log_path})")


def board_python_version(rootfs: Path) -> str:
    versions = sorted(p.name[len("python"):] for p in (rootfs / "usr" / "bin").glob("python3.*")
                      if p.name[len("python"):].replace(".", "").isdigit())
    if not versions:
        raise UserError(f"{rootfs}: the userland has no python3.X")
    return versions[-1]


def site_dir(rootfs: Path) -> Path:
    # Debian's site.py adds <prefix>/local/lib/python3.X/dist-packages; under -L the prefix is
    # ROOTFS/usr, so this is on the board's path and nothing else is.
    return rootfs / "usr" / "local" / "lib" / f"python{board_python_version(rootfs)}" / "dist-packages"


def pip_target(requirements: list[str], site: Path, version: str, log_path: Path, no_deps: bool = False) -> None:
    tags = [arg for tag in GLIBC_TAGS for arg in ("--platform", tag)]
    _run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
          "--only-binary=:all:", "--implementation", "cp", "--python-version", version, *tags,
          *(["--no-deps"] if no_deps else []), "--upgrade", "--target", str(site), *requirements],
         f"pip install for the board ({' '.join(requirements)})", log_path)


def build_base(board_dir: Path, log: Log) -> Path:
    """The Debian userland with every wheel, built once per requirement set."""
    suite = host_suite()
    base = board_dir / f"base-{base_key(suite)}"
    if (base / "rootfs" / "usr" / "bin" / "python3").exists():
        return base
    check_host_tools()
    tmp = board_dir / f".{base.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log_path = board_dir / f"{base.name}.log"
    rootfs = tmp / "rootfs"
    t0 = time.monotonic()
    log(f"creating the arm64 userland ({suite}) with mmdebstrap")
    _run(["mmdebstrap", "--variant=extract", "--arch=arm64", f"--include={','.join(DEB_PACKAGES)}",
          suite, str(rootfs)], "mmdebstrap", log_path)
    site = site_dir(rootfs)
    version = board_python_version(rootfs)
    log(f"installing aarch64 wheels for Python {version}: {' '.join(board_requirements())} "
        f"{TORCH_BY_ARCH['aarch64']}")
    pip_target(board_requirements(), site, version, log_path)
    pip_target([TORCH_BY_ARCH["aarch64"]], site, version, log_path, no_deps=True)
    os.replace(tmp, base)  # whole or not at all: an interrupted build is never reused
    log(f"userland built in {time.monotonic() - t0:.0f} s: {base}")
    return base


def cpuinfo_text(cpu: BoardCPU, cores: int) -> str:
    block = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: {v}\nCPU part\t: {p}\nCPU revision\t: {r}\n\n")
    body = "".join(block.format(i=i, f=cpu.features, v=cpu.variant, p=cpu.part, r=cpu.revision) for i in range(cores))
    return body + f"Model\t\t: {cpu.model}\n"


def midr(cpu: BoardCPU) -> int:
    """MIDR_EL1: implementer Arm (0x41), variant, architecture 0xf, part number, revision."""
    return 0x41 << 24 | int(cpu.variant, 16) << 20 | 0xF << 16 | int(cpu.part, 16) << 4 | cpu.revision


def wrapper_text(qemu: str, cpu: BoardCPU, rootfs: Path) -> str:
    import shlex  # noqa: PLC0415

    from harness.devices.cprobe import LAUNCHER_ENV  # noqa: PLC0415

    emulator = f"{shlex.quote(qemu)} -cpu {shlex.quote(cpu.qemu_cpu or cpu.name)} -L {shlex.quote(str(rootfs))}"
    # tvm_ffi would otherwise import torch and JIT a C extension with the host's x86 cc on every
    # `import tvm` (2+ minutes under qemu, and it fails anyway). Without binfmt_misc the board's
    # processes cannot exec its probe binaries (clock, FMA): the launcher runs them under qemu.
    return ("#!/bin/sh\n# The emulated board's python (harness devices emulate).\n"
            "export TVM_FFI_DISABLE_TORCH_C_DLPACK=1\n"
            f"export {LAUNCHER_ENV}={shlex.quote(emulator)}\n"
            f"exec {emulator} {shlex.quote(str(rootfs / 'usr' / 'bin' / 'python3'))} \"$@\"\n")


def _write_new(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace a file that may be a hard link into the shared userland, without touching it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def host_cores() -> int:
    return len(os.sched_getaffinity(0))


def fresh_copy(base: Path, board: Board) -> Path | None:
    """A temporary hard-linked copy of the userland for the board, or None if it is current."""
    marker = board.dir / "base"
    if marker.exists() and marker.read_text() == base.name and board.python.exists():
        return None
    tmp = board.dir.with_name(f".{board.dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Hard links: a second board costs seconds and no disk.
    subprocess.run(["cp", "-al", str(base / "rootfs"), str(tmp / "rootfs")], check=True)
    return tmp


def make_board(board_dir: Path, cpu: BoardCPU, torch: bool, log: Log) -> Board:
    base = build_base(board_dir, log)
    board = Board(board_dir / f"{cpu.name}{'' if torch else '-notorch'}", cpu, torch)
    if (tmp := fresh_copy(base, board)) is None:
        return refresh_wrapper(board, check_host_tools()["qemu-aarch64"])
    rootfs = tmp / "rootfs"
    site = site_dir(rootfs)
    if not torch:
        for p in site.glob("torch*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    _write_new(rootfs / "proc" / "cpuinfo", cpuinfo_text(cpu, host_cores()))
    _write_new(rootfs / "proc" / "device-tree" / "model", cpu.model + "\x00")
    for i in range(host_cores()):  # oneDNN's xbyak_aarch64 reads the CPU id here
        _write_new(rootfs / "sys" / "devices" / "system" / "cpu" / f"cpu{i}" / "regs" / "identification" / "midr_el1",
                   f"0x{midr(cpu):016x}\n")
    return install_board(tmp, board, base, check_host_tools()["qemu-aarch64"], log)


def refresh_wrapper(board: Board, qemu: str) -> Board:
    """A board built by an older harness gets the current python wrapper (what it exports to
    the board's processes may have grown, e.g. the probe launcher)."""
    text = wrapper_text(qemu, board.cpu, board.rootfs)
    if board.python.read_text() != text:
        _write_new(board.python, text, 0o755)
    return board


def install_board(tmp: Path, board: Board, base: Path, qemu: str, log: Log) -> Board:
    """The python wrapper and sys.executable .pth into the copy `tmp`, then it replaces board.dir
    (the paths written point at board.dir, where the copy ends up)."""
    _write_new(site_dir(tmp / "rootfs") / "harness_board.pth",
               f"import sys; sys.executable = {str(board.python)!r}; sys._base_executable = sys.executable\n")
    _write_new(tmp / "bin" / "python", wrapper_text(qemu, board.cpu, board.rootfs), 0o755)
    (tmp / "base").write_text(base.name)
    if board.dir.exists():
        shutil.rmtree(board.dir)
    os.replace(tmp, board.dir)
    log(f"board {board.name} ready: {board.dir}")
    return board


def device_entry(board: Board, ssh_entry: dict[str, Any]) -> dict[str, Any]:
    """The board's devices.yaml entry: the loopback sshd's connection fields, the board's CPU."""
    cores = host_cores()  # qemu-user runs the guest's threads on the host's cores
    keep = ("host", "port", "user", "key", "known_hosts", "workdir", "connect_timeout_s")
    entry = {
        "description": f"{board.cpu.model} emulated by qemu-user on this host ({board.cpu.name}, "
                       f"{cores} host cores{'' if board.torch else ', no torch'}): times are qemu's, not a Pi's",
        "transport": "ssh", **{k: ssh_entry[k] for k in keep if k in ssh_entry},
        "python": str(board.python), "arch": "aarch64", "cpu": board.cpu.name,
        "cpu_model": f"{board.cpu.name} (qemu-user)", "cores": cores, "freq_ghz": board.cpu.freq_ghz,
        "cross_compiler": "aarch64-linux-gnu-g++",
        "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": board.cpu.name,
                   "mattr": list(board.cpu.mattr), "num-cores": cores},
        "command_timeout_s": 3600, "emulated": True,
    }
    return {**entry, **armv7_entry_fields(board, cores)} if board.arch == "armv7l" else entry


def write_devices_file(board: Board, ssh_entry: dict[str, Any], path: Path | None = None) -> Path:
    path = path or board.devices_file
    doc = {"default": board.name, "devices": {board.name: device_entry(board, ssh_entry)}}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sshd_pid(board: Board) -> int | None:
    try:
        pid = int((board.ssh_dir / "sshd.pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start_sshd(board: Board, port: int | None) -> dict[str, Any]:
    """The loopback sshd serving the board (started unless it runs); its device entry."""
    entry_file = board.ssh_dir / "devices.yaml"
    if sshd_pid(board) is None:
        if not Path("/usr/sbin/sshd").exists():
            raise UserError("/usr/sbin/sshd not found; install openssh-server (scripts/setup.sh --dev does)")
        done = subprocess.run(["bash", str(SSHD_SCRIPT), "--port", str(port or _free_port()),
                               "--dir", str(board.ssh_dir), "--python", str(board.python)],
                              capture_output=True, text=True,
                              env={**os.environ, "HARNESS_HOST_PYTHON": sys.executable})
        if done.returncode != 0:
            raise UserError(f"starting the board's sshd failed: {(done.stderr or done.stdout).strip()}")
    return yaml.safe_load(entry_file.read_text())["devices"]["loopback"]


def stop_sshd(board: Board) -> bool:
    pid = sshd_pid(board)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    return True


def dir_size_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True)
    return float(out.stdout.split()[0]) if out.returncode == 0 else float("nan")


def check_host() -> None:
    if platform.machine() != "x86_64" and platform.machine() != "aarch64":
        raise UserError(f"emulating a board needs an x86_64 or aarch64 Debian host, not {platform.machine()}")


def run_emulate(cpu_name: str, torch: bool, port: int | None, board_dir: Path | None, stop: bool,
                log: Log, board_kind: str | None = None) -> Board:
    """Build the board if needed and serve it (or stop serving it); prints how to use it."""
    check_host()
    if board_kind is not None and board_kind not in BOARD_KINDS:
        raise UserError(f"unknown --board {board_kind!r}; emulated boards: {', '.join(BOARD_KINDS)}")
    armv7 = board_kind == "pi3-armv7"
    cpu = ARMV7_CPU if armv7 else cpu_spec(cpu_name)
    board_dir = (board_dir or BOARD_DIR).resolve()
    if stop:
        board = (Board(board_dir / "pi3-armv7", cpu, False, "armv7l") if armv7 else
                 Board(board_dir / f"{cpu.name}{'' if torch else '-notorch'}", cpu, torch))
        log(f"stopped the sshd of {board.name}" if stop_sshd(board) else f"{board.name}: no sshd running")
        return board
    t0 = time.monotonic()
    board = make_armv7_board(board_dir, log) if armv7 else make_board(board_dir, cpu, torch, log)
    path = write_devices_file(board, start_sshd(board, port))
    log(f"board {board.name} ({board.cpu.model}, qemu -cpu {cpu.qemu_cpu or cpu.name}) served over SSH in "
        f"{time.monotonic() - t0:.0f} s; userland {dir_size_mb(board.rootfs):.0f} MB")
    log(f"devices file: {path}")
    log(f"run:  harness run --devices-file {path} --device {board.name} --model unet-tiny")
    how = "--board pi3-armv7" if armv7 else f"--cpu {cpu.name}{'' if torch else ' --no-torch'}"
    log(f"stop: harness devices emulate {how} --stop")
    return board


# ------------------------------------------------------------------ --board pi3-armv7
# The study's Pi 3B: a Cortex-A53 running a 32-bit (armhf) OS. qemu-arm has no cortex-a53 model;
# `max` is an ARMv8 core in AArch32, which runs what LLVM emits for -mcpu=cortex-a53 (ARMv8
# AArch32 instructions a cortex-a15 model would refuse).
BOARD_KINDS = ("pi3-armv7",)  # without --board: the aarch64 board --cpu names
ARMV7_CPU = BoardCPU("cortex-a53", "0xd03", "0x0", 4,
                     "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32",
                     "Raspberry Pi 3 Model B Rev 1.2", "pi3-armv7-emulated", 1.2, ("+neon",), qemu_cpu="max")
ARMV7_DEB_PACKAGES = ["python3", "python3-numpy", "python3-yaml", "libstdc++6", "zlib1g"]
ARMV7_SUITE = "bookworm"  # Raspberry Pi OS 12; the runtime's Cython core is built for its python3.11
BUILD_ARMV7 = "scripts/build-armv7-runtime.sh"


def armv7_runtime(board_dir: Path) -> Path:
    """The cross-built TVM runtime's board site-packages, or a UserError naming the build command."""
    out = board_dir / "armv7-runtime"  # scripts/build-armv7-runtime.sh's default output under .board/
    if not (out / "BUILD-INFO").exists() or not (out / "site" / "tvm").is_dir():
        raise UserError(f"no armv7 TVM runtime in {out}: build it first (~10 min on 2 cores): "
                        f"{BUILD_ARMV7} {out}")
    return out


def armv7_cpuinfo_text(cpu: BoardCPU, cores: int) -> str:
    """/proc/cpuinfo as a Pi 3B on 32-bit Raspberry Pi OS shows it (CPU architecture 7)."""
    block = ("processor\t: {i}\nmodel name\t: ARMv7 Processor rev {r} (v7l)\nBogoMIPS\t: 38.40\n"
             "Features\t: {f}\nCPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: {v}\n"
             "CPU part\t: {p}\nCPU revision\t: {r}\n\n")
    body = "".join(block.format(i=i, f=cpu.features, v=cpu.variant, p=cpu.part, r=cpu.revision) for i in range(cores))
    return body + f"Hardware\t: BCM2835\nRevision\t: a02082\nModel\t\t: {cpu.model}\n"


def build_armv7_base(board_dir: Path, runtime: Path, log: Log) -> Path:
    """The armhf userland with the cross-built runtime, once per package list and runtime build."""
    spec = json.dumps([ARMV7_SUITE, ARMV7_DEB_PACKAGES, (runtime / "BUILD-INFO").read_text()])
    base = board_dir / f"base-armv7-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"
    if (base / "rootfs" / "usr" / "bin" / "python3").exists():
        return base
    if shutil.which("mmdebstrap") is None:
        raise UserError("mmdebstrap not found; install it: apt-get install --no-install-recommends mmdebstrap")
    tmp = board_dir / f".{base.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log_path = board_dir / f"{base.name}.log"
    rootfs = tmp / "rootfs"
    log(f"creating the armhf userland ({ARMV7_SUITE}) with mmdebstrap")
    _run(["mmdebstrap", "--variant=extract", "--arch=armhf", f"--include={','.join(ARMV7_DEB_PACKAGES)}",
          ARMV7_SUITE, str(rootfs)], "mmdebstrap", log_path)
    # The extract variant runs no package scripts: numpy's BLAS/LAPACK alternatives links are missing.
    libdir = rootfs / "usr" / "lib" / "arm-linux-gnueabihf"
    for lib in ("blas/libblas.so.3", "lapack/liblapack.so.3"):
        link = libdir / Path(lib).name
        if not link.exists():
            link.symlink_to(lib)
    site = site_dir(rootfs)
    site.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", f"{runtime / 'site'}/.", str(site)], check=True)
    os.replace(tmp, base)
    return base


def make_armv7_board(board_dir: Path, log: Log) -> Board:
    runtime = armv7_runtime(board_dir)
    if shutil.which("qemu-arm") is None:
        raise UserError("qemu-arm not found; install it: apt-get install --no-install-recommends qemu-user")
    base = build_armv7_base(board_dir, runtime, log)
    board = Board(board_dir / "pi3-armv7", ARMV7_CPU, False, "armv7l")
    if (tmp := fresh_copy(base, board)) is None:
        return refresh_wrapper(board, str(shutil.which("qemu-arm")))
    rootfs = tmp / "rootfs"
    _write_new(rootfs / "proc" / "cpuinfo", armv7_cpuinfo_text(ARMV7_CPU, host_cores()))
    _write_new(rootfs / "proc" / "device-tree" / "model", ARMV7_CPU.model + "\x00")
    return install_board(tmp, board, base, str(shutil.which("qemu-arm")), log)


def armv7_entry_fields(board: Board, cores: int) -> dict[str, Any]:
    """What the armv7 board's entry says differently from an aarch64 board's."""
    return {
        "description": f"{board.cpu.model} on a 32-bit OS, emulated by qemu-arm on this host (-cpu max for "
                       f"a cortex-a53, {cores} host cores, no torch): times are qemu's, not a Pi's",
        "arch": "armv7l", "cpu_model": f"{board.cpu.name} (qemu-arm)", "cross_compiler": "arm-linux-gnueabihf-g++",
        # mfloat-abi hard: armhf passes floats in VFP registers (the loader adds it too)
        "target": {"kind": "llvm", "mtriple": "armv7l-linux-gnueabihf", "mcpu": board.cpu.name,
                   "mattr": list(board.cpu.mattr), "mfloat-abi": "hard", "num-cores": cores},
    }

"""Small C probes that measure the device itself: compiled, cached and run one copy per core.

Shared by clock.py (the all-core clock) and fma.py (the all-core FMA throughput). A probe is
compiled by the device's own C compiler if it builds for the device's arch, or cross-compiled
by the host (static: no libc to match) and shipped, its path then given in the probe's
environment variable; else there is no binary, and the caller records None with the reason.

On an emulated board (qemu-user without binfmt_misc) a child process cannot exec an aarch64
ELF: LAUNCHER_ENV, set by the board's python wrapper (harness/devices/emulate.py), names the
command that runs one (qemu-aarch64 -cpu ...), put before the probe's own command.

Standard library only: this runs on devices too.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

LAUNCHER_ENV = "HARNESS_PROBE_LAUNCHER"
# `cc -dumpmachine` prefix of a compiler that builds for this machine
_TRIPLE_PREFIX = {"x86_64": "x86_64", "aarch64": "aarch64", "armv7l": "arm"}


def _no_flags(arch: str) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class CProbe:
    name: str  # names the cached binary (harness-<name>-<hash>) and the shipped one (<name>-probe)
    env: str  # the environment variable that gives the path of a binary the host shipped
    source_for: Callable[[str], str | None]  # arch -> C source; None where there is no probe for it
    flags_for: Callable[[str], tuple[str, ...]] = _no_flags  # arch -> extra compiler flags

    @property
    def shipped_name(self) -> str:
        return f"{self.name}-probe"


def compile_probe(probe: CProbe, cc: str, arch: str, exe: Path, static: bool = False) -> str | None:
    """Compile `probe` for `arch` with `cc` into exe; None, or why it failed."""
    source = probe.source_for(arch)
    if source is None:
        return f"no {probe.name} probe for arch {arch}"
    src = exe.with_name(exe.name + ".c")
    src.write_text(source)
    tmp = exe.with_name(f"{exe.name}.{os.getpid()}")
    command = [cc, "-O2", *probe.flags_for(arch), *(["-static"] if static else []), "-o", str(tmp), str(src)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{cc} failed: {exc}"
    if done.returncode != 0:
        return f"{cc} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    os.replace(tmp, exe)  # atomic: concurrent runs never see half a binary
    return None


def native_cc() -> tuple[str | None, str | None]:
    """A C compiler that builds for THIS machine, or why there is none. On an emulated board
    the PATH is the host's: its x86 `cc` must not be taken for the board's."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc) on the device"
    arch = platform.machine()
    try:
        triple = subprocess.run([cc, "-dumpmachine"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{cc} does not run: {exc}"
    if not triple.startswith(_TRIPLE_PREFIX.get(arch, arch)):
        return None, f"the device's {cc} builds for {triple or 'an unknown target'}, not {arch}"
    return cc, None


def probe_binary(probe: CProbe) -> tuple[Path | None, str | None]:
    """The probe's binary for this machine (shipped, or compiled once and cached by the hash of
    its source and flags), and a note: where it came from, or why there is none."""
    shipped = os.environ.get(probe.env)
    if shipped:
        return Path(shipped), "probe cross-compiled by the host"
    arch = platform.machine()
    source = probe.source_for(arch)
    if source is None:
        return None, f"no {probe.name} probe for arch {arch}"
    cc, why = native_cc()
    if cc is None:
        return None, why
    digest = hashlib.sha256("\0".join([source, *probe.flags_for(arch)]).encode()).hexdigest()[:12]
    exe = Path(tempfile.gettempdir()) / f"harness-{probe.name}-{digest}"
    if not exe.exists():
        failed = compile_probe(probe, cc, arch, exe)
        if failed:
            return None, failed
    return exe, None


def launcher() -> list[str] | str:
    """The command an emulated board runs a probe binary through ([] elsewhere), or what is
    wrong with it."""
    text = os.environ.get(LAUNCHER_ENV, "")
    try:
        return shlex.split(text)
    except ValueError as exc:
        return f"{LAUNCHER_ENV}={text!r} is not a command ({exc})"


@dataclass(frozen=True)
class ProbeOutput:
    """What each copy of a probe printed (None if any copy failed), or why there is nothing."""
    outputs: list[str] | None
    error: str | None = None


def run_on_every_core(exe: Path, copies: int, args: tuple[str, ...] = (), timeout_s: float = 120.0) -> ProbeOutput:
    """Run `copies` copies of exe at once (one per core: the all-core figure a multi-threaded
    kernel sees) and collect their stdout. A copy that exits non-zero is the answer's error,
    with the first line it printed (the probes say there why they cannot measure)."""
    prefix = launcher()
    if isinstance(prefix, str):
        return ProbeOutput(None, prefix)
    command = [*prefix, str(exe), *args]
    try:
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for _ in range(max(1, copies))]
    except OSError as exc:
        return ProbeOutput(None, f"cannot run the probe {exe.name}: {exc}")
    try:
        outputs = [p.communicate(timeout=timeout_s)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.wait()
        return ProbeOutput(None, f"the probe {exe.name} took longer than {timeout_s:.0f} s")
    for p, out in zip(procs, outputs):
        if p.returncode != 0:
            said = (out.strip().splitlines() or [f"exit status {p.returncode}"])[0]
            return ProbeOutput(None, f"the probe {exe.name} failed: {said}")
    return ProbeOutput(outputs)

"""Measure the clock the cores really run at, where the OS cannot say.

In a VM there is no cpufreq, and /proc/cpuinfo's "cpu MHz" is the nominal TSC rate: on this
project's x86 VMs it reads 2445 MHz while the cores boost to ~2.6 GHz on both and ~3.0 GHz on
one. A chain of dependent integer adds retires one add per cycle on every core this harness
targets (x86-64, Cortex-A53/A72/A76), so adds per second is the clock. One copy runs per core
at once, giving the all-core clock that a multi-threaded kernel sees.

Standard library only (this runs on devices too). The probe is compiled by the device's own C
compiler if it builds for the device's arch, or cross-compiled by the host and shipped
(PROBE_ENV); else the reading is None with the reason.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_ADD = {"x86_64": "add $1, %0", "aarch64": "add %0, %0, #1", "armv7l": "add %0, %0, #1"}

_SOURCE = r"""
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(void) {
    unsigned long x = 0; const long iters = 4000000; double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        for (long i = 0; i < iters; i++) {
#define A1 __asm__ volatile("ADD" : "+r"(x));
#define A10 A1 A1 A1 A1 A1 A1 A1 A1 A1 A1
            A10 A10 A10 A10 A10
        }
        double dt = now() - t0; if (dt < best) best = dt;
    }
    printf("%.1f\n", iters * 50.0 / best / 1e6);
    return (int)(x & 1) * 0;
}
"""


PROBE_ENV = "HARNESS_CLOCK_PROBE"  # a probe binary the host cross-compiled and shipped
# `cc -dumpmachine` prefix of a compiler that builds for this machine
_TRIPLE_PREFIX = {"x86_64": "x86_64", "aarch64": "aarch64", "armv7l": "arm"}


@dataclass(frozen=True)
class ClockReading:
    mhz: float | None
    note: str | None  # why there is no reading, or where the probe came from


def source_for(arch: str) -> str | None:
    add = _ADD.get(arch)
    return _SOURCE.replace("ADD", add) if add else None


def compile_probe(cc: str, arch: str, exe: Path, static: bool = False) -> str | None:
    """Compile the probe for `arch` with `cc` into exe; None, or why it failed."""
    source = source_for(arch)
    if source is None:
        return f"no probe for arch {arch}"
    src = exe.with_name(exe.name + ".c")
    src.write_text(source)
    tmp = exe.with_name(f"{exe.name}.{os.getpid()}")
    try:
        done = subprocess.run([cc, "-O2", *(["-static"] if static else []), "-o", str(tmp), str(src)],
                              capture_output=True, text=True, timeout=60)
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


def _binary() -> tuple[Path | None, str | None]:
    shipped = os.environ.get(PROBE_ENV)
    if shipped:
        return Path(shipped), "probe cross-compiled by the host"
    cc, why = native_cc()
    source = source_for(platform.machine())
    if source is None:
        return None, f"no probe for arch {platform.machine()}"
    if cc is None:
        return None, why
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    exe = Path(tempfile.gettempdir()) / f"harness-clock-{digest}"
    if not exe.exists():
        failed = compile_probe(cc, platform.machine(), exe)
        if failed:
            return None, failed
    return exe, None


def read_clock(cores: int) -> ClockReading:
    """The slowest core's clock with `cores` copies of the add chain running at once."""
    exe, note = _binary()
    if exe is None:
        return ClockReading(None, f"unknown: {note}")
    try:
        procs = [subprocess.Popen([str(exe)], stdout=subprocess.PIPE, text=True) for _ in range(cores)]
        outs = [p.communicate(timeout=60)[0] for p in procs]
        return ClockReading(min(float(o) for o in outs), note)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return ClockReading(None, f"unknown: cannot run the probe {exe.name}: {exc}")


def measure_clock_mhz(cores: int) -> float | None:
    return read_clock(cores).mhz

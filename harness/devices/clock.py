"""Measure the clock the cores really run at, where the OS cannot say.

In a VM there is no cpufreq, and /proc/cpuinfo's "cpu MHz" is the nominal TSC rate: on this
project's x86 VMs it reads 2445 MHz while the cores boost to ~2.6 GHz on both and ~3.0 GHz on
one. A chain of dependent integer adds retires one add per cycle on every core this harness
targets (x86-64, Cortex-A53/A72/A76), so adds per second is the clock. One copy runs per core
at once, giving the all-core clock that a multi-threaded kernel sees.

Standard library only (this runs on devices too); needs a C compiler (`cc`), else None.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
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


def _binary() -> Path | None:
    add = _ADD.get(platform.machine())
    cc = shutil.which("cc") or shutil.which("gcc")
    if add is None or cc is None:
        return None
    source = _SOURCE.replace("ADD", add)
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    exe = Path(tempfile.gettempdir()) / f"harness-clock-{digest}"
    if not exe.exists():
        src = exe.with_suffix(".c")
        src.write_text(source)
        tmp = exe.with_name(f"{exe.name}.{os.getpid()}")
        done = subprocess.run([cc, "-O2", "-o", str(tmp), str(src)], capture_output=True, timeout=60)
        if done.returncode != 0:
            return None
        os.replace(tmp, exe)  # atomic: concurrent runs never see half a binary
    return exe


def measure_clock_mhz(cores: int) -> float | None:
    """The slowest core's clock with `cores` copies of the add chain running at once."""
    try:
        exe = _binary()
        if exe is None:
            return None
        procs = [subprocess.Popen([str(exe)], stdout=subprocess.PIPE, text=True) for _ in range(cores)]
        outs = [p.communicate(timeout=60)[0] for p in procs]
        return min(float(o) for o in outs)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None

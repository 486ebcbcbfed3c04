"""Measure the clock the cores really run at, where the OS cannot say.

In a VM there is no cpufreq, and /proc/cpuinfo's "cpu MHz" is the nominal TSC rate: on this
project's x86 VMs it reads 2445 MHz while the cores boost to ~2.6 GHz on both and ~3.0 GHz on
one. A chain of dependent integer adds retires one add per cycle on every core this harness
targets (x86-64, Cortex-A53/A72/A76), so adds per second is the clock. One copy runs per core
at once, giving the all-core clock that a multi-threaded kernel sees.

Seconds are the copy's own CPU time (CLOCK_THREAD_CPUTIME_ID), not wall time: on a shared
machine a copy descheduled for part of a run would otherwise read as a slow clock (here, with
other jobs on the 2 cores, wall time said 1100-1350 MHz where CPU time said 4090-4170, the
quiet machine's figure), and % of peak is now taken at this clock (peak_basis.py).

Standard library only (this runs on devices too). The probe is compiled by the device's own C
compiler if it builds for the device's arch, or cross-compiled by the host and shipped
(PROBE_ENV); else the reading is None with the reason (harness/devices/cprobe.py does that,
for this probe and fma.py's).
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.devices.cprobe import CProbe, probe_binary, run_on_every_core

_ADD = {"x86_64": "add $1, %0", "aarch64": "add %0, %0, #1", "armv7l": "add %0, %0, #1"}

_SOURCE = r"""
#include <stdio.h>
#include <time.h>
/* CPU time of this thread, not wall time: see the module docstring */
static double now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
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


@dataclass(frozen=True)
class ClockReading:
    mhz: float | None
    note: str | None  # why there is no reading, or where the probe came from


def source_for(arch: str) -> str | None:
    add = _ADD.get(arch)
    return _SOURCE.replace("ADD", add) if add else None


CLOCK_PROBE = CProbe("clock", PROBE_ENV, source_for)


def read_clock(cores: int) -> ClockReading:
    """The slowest core's clock with `cores` copies of the add chain running at once."""
    exe, note = probe_binary(CLOCK_PROBE)
    if exe is None:
        return ClockReading(None, f"unknown: {note}")
    ran = run_on_every_core(exe, cores, timeout_s=60)
    if ran.outputs is None:
        return ClockReading(None, f"unknown: {ran.error}")
    try:
        return ClockReading(min(float(o) for o in ran.outputs), note)
    except ValueError:
        return ClockReading(None, f"unknown: the probe {exe.name} printed no clock")


def measure_clock_mhz(cores: int) -> float | None:
    return read_clock(cores).mhz

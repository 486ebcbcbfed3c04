"""Device state at a moment: frequency, governor, temperature, throttling, load.

One small `collect_*` function per source, each returning None where the source does not
exist (no cpufreq in a VM, no thermal zone, no vcgencmd off a Pi). Standard library only:
this module also runs on the device, inside the on-device runner.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

from harness.devices.peak_basis import clock_pinned
from harness.devices.peaks import cpuinfo_path, read_cpufreq


@dataclass(frozen=True)
class DeviceState:
    governor: str | None  # "performance", "ondemand", ...; "mixed: a,b" if cores differ
    freq_mhz: list[float] | None  # current frequency of each core
    freq_source: str | None  # where freq_mhz was read from
    freq_fixed: bool | None  # min == max scaling frequency on every core
    temp_c: float | None
    throttled: str | None  # vcgencmd get_throttled bits, e.g. "0x0"; None off a Pi
    load_1m: float
    load_5m: float
    # All-core clock measured by harness/devices/clock.py wherever the clock is not pinned: in
    # a VM without cpufreq "cpu MHz" is a nominal constant, and under a governor that scales
    # the frequency the idle reading says nothing of the clock under load. % of peak is then a
    # share of the peak at this clock (harness/devices/peak_basis.py).
    clock_mhz_measured: float | None = None
    clock_note: str | None = None  # why there is no measured clock ("unknown: ..."), or its probe
    # Raw CPU-time counters (seconds): the machine's busy and total time over all cores from
    # /proc/stat (steal counts as busy: a hypervisor taking the core is contention too), and
    # this process's own time with its waited-for children (the per-build processes).
    # Between two states they give the share of the CPUs other processes used (other_cpu_share).
    cpu_seconds: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def collect_governor() -> str | None:
    govs = {g for cpu in _cpus() if (g := read_cpufreq(cpu, "scaling_governor"))}
    if not govs:
        return None
    return govs.pop() if len(govs) == 1 else "mixed: " + ",".join(sorted(govs))


def collect_frequency() -> tuple[list[float] | None, str | None]:
    khz = [read_cpufreq(cpu, "scaling_cur_freq") for cpu in _cpus()]
    if all(khz):
        return [int(k) / 1000.0 for k in khz], "cpufreq"  # type: ignore[arg-type]
    mhz = [float(line.split(":")[1]) for line in (_read(cpuinfo_path()) or "").splitlines()
           if line.startswith("cpu MHz")]
    if mhz:
        return mhz, "/proc/cpuinfo"
    return None, None


def collect_freq_fixed() -> bool | None:
    bounds = [(read_cpufreq(c, "scaling_min_freq"), read_cpufreq(c, "scaling_max_freq"))
              for c in _cpus()]
    if not all(lo and hi for lo, hi in bounds):
        return None
    return all(lo == hi for lo, hi in bounds)


def _vcgencmd(*args: str) -> str | None:
    if not shutil.which("vcgencmd"):
        return None
    try:
        out = subprocess.run(["vcgencmd", *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def collect_temperature() -> float | None:
    vc = _vcgencmd("measure_temp")  # "temp=47.2'C"
    if vc and "=" in vc:
        return float(vc.split("=")[1].split("'")[0])
    temps = [int(t) / 1000.0 for path in glob.glob("/sys/class/thermal/thermal_zone*/temp")
             if (t := _read(path)) and t.lstrip("-").isdigit()]
    return max(temps) if temps else None


def collect_throttled() -> str | None:
    vc = _vcgencmd("get_throttled")  # "throttled=0x50000"
    return vc.split("=")[1] if vc and "=" in vc else None


def collect_measured_clock(pinned: bool) -> tuple[float | None, str | None]:
    if pinned:
        return None, None  # the clock cannot move: no need to burn the cores measuring it
    from harness.devices.clock import read_clock  # noqa: PLC0415

    reading = read_clock(len(_cpus()))
    return reading.mhz, reading.note


# /proc/stat's cpu line: user nice system idle iowait irq softirq steal (guest time is already
# inside user and nice)
_IDLE_FIELDS = (3, 4)
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def collect_cpu_seconds() -> dict[str, float] | None:
    first = (_read("/proc/stat") or "").partition("\n")[0].split()
    if len(first) < 9 or first[0] != "cpu":
        return None
    ticks = [int(v) for v in first[1:9]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = sum(ticks[i] for i in _BUSY_FIELDS) / hz
    own = sum(os.times()[:4])  # user + system of this process and of its waited-for children
    return {"busy": busy, "total": busy + sum(ticks[i] for i in _IDLE_FIELDS) / hz, "own": own}


def other_cpu_share(before: dict[str, Any], after: dict[str, Any] | None) -> float | None:
    """Share of the machine's CPU time that other processes used between two states: 0 on a
    quiet machine, 0.5 when something else kept one of two cores busy throughout."""
    a, b = before.get("cpu_seconds"), (after or {}).get("cpu_seconds")
    keys = ("busy", "total", "own")
    if not all(isinstance(c, dict) and all(isinstance(c.get(k), (int, float)) for k in keys) for c in (a, b)):
        return None  # a state from before the counters, or from a device without /proc/stat
    if b["total"] <= a["total"]:
        return None
    others = (b["busy"] - a["busy"]) - (b["own"] - a["own"])
    return min(1.0, max(0.0, others / (b["total"] - a["total"])))


def collect_state() -> DeviceState:
    freq, source = collect_frequency()
    load1, load5, _ = os.getloadavg()
    governor, fixed = collect_governor(), collect_freq_fixed()
    clock, clock_note = collect_measured_clock(clock_pinned({"governor": governor, "freq_fixed": fixed}))
    return DeviceState(governor=governor, freq_mhz=freq, freq_source=source,
                       freq_fixed=fixed, temp_c=collect_temperature(),
                       throttled=collect_throttled(), load_1m=load1, load_5m=load5,
                       clock_mhz_measured=clock, clock_note=clock_note,
                       cpu_seconds=collect_cpu_seconds())


# Above this share of the CPUs used by others, a run is "busy": its threads were descheduled
# (on 2 cores one competing process can double a layer's time), and verdicts leave it out.
# HARNESS_BUSY_SHARE changes it (1 judges every run: the tests of verdict mechanics use that, so
# that a loaded test machine does not turn their runs into "not judged").
BUSY_SHARE = 0.10
BUSY_SHARE_ENV = "HARNESS_BUSY_SHARE"


def busy_share() -> float:
    text = os.environ.get(BUSY_SHARE_ENV)
    if text is None:
        return BUSY_SHARE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        from harness.errors import UserError  # noqa: PLC0415

        raise UserError(f"{BUSY_SHARE_ENV}={text!r}: expected a share of the CPUs between 0 and 1")
    return value


def run_busy(before: dict[str, Any], after: dict[str, Any] | None) -> bool:
    share = other_cpu_share(before, after)
    return share is not None and share > busy_share()


def state_warnings(before: dict[str, Any], after: dict[str, Any] | None, cores: int) -> list[str]:
    """What in the recorded state makes a measurement less trustworthy."""
    warnings = []
    if before.get("freq_fixed") is False:
        warnings.append(f"CPU frequency is not fixed (governor {before.get('governor')}); "
                        "pin it for stable numbers (the UNet study pinned its Pis at 0.6 GHz)")
    if before.get("load_1m", 0) > 0.5 * cores:
        warnings.append(f"the device was busy before the run (load {before['load_1m']:.2f} on {cores} cores)")
    if before.get("throttled") not in (None, "0x0"):
        warnings.append(f"the device reports throttling ({before['throttled']})")
    if after:
        if after.get("throttled") not in (None, "0x0", before.get("throttled")):
            warnings.append(f"the device throttled during the run ({after['throttled']})")
        share = other_cpu_share(before, after)
        if share is not None and share > busy_share():
            warnings.append(f"other processes used {share:.0%} of the CPU time during the run: its times are "
                            "not those of a quiet machine, and verdicts leave it out")
        if freq_changed(before, after):
            f0, f1 = before["freq_mhz"], after["freq_mhz"]
            warnings.append(f"CPU frequency changed during the run ({_mean(f0):.0f} -> {_mean(f1):.0f} MHz)")
    return warnings


def freq_changed(before: dict[str, Any], after: dict[str, Any] | None, tolerance: float = 0.02) -> bool:
    f0, f1 = before.get("freq_mhz"), (after or {}).get("freq_mhz")
    return bool(f0 and f1 and max(abs(a - b) / a for a, b in zip(f0, f1)) > tolerance)


def run_flags(before: dict[str, Any], after: dict[str, Any] | None, cores: int) -> dict[str, Any]:
    """The result's top-level flags: `noisy` when the frequency changed or the device throttled
    while measuring (the numbers mix two machine states), and every state warning."""
    throttled = bool(after) and after.get("throttled") not in (None, "0x0", before.get("throttled"))
    return {"noisy": freq_changed(before, after) or throttled,
            "warnings": state_warnings(before, after, cores)}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)

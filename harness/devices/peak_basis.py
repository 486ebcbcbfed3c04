"""Which peak % of peak is a share of: the theoretical peak at the clock the cores really ran.

A result keeps three compute figures (README, "Peaks"):
- `device.peak_gflops`: the theoretical peak at the NOMINAL clock, cores x freq_ghz x
  FLOP/cycle/core (devices.yaml or /proc/cpuinfo). Its meaning is unchanged from older files.
- `device.peak`: the peak every `pct_peak` is a share of, with its basis: the same FLOP/cycle
  x cores at the clock the run's basis says, and why that basis.
- `system.fma_peak`: the FMA throughput measured on the device (harness/devices/fma.py), shown
  beside it as the achievable ceiling; never the basis.

The basis is the nominal clock when the clock is pinned (governor `performance`, or the
scaling minimum equal to the maximum on every core), and the all-core clock measured by
harness/devices/clock.py when it is not (another governor, or a VM without cpufreq, where
/proc/cpuinfo's MHz is a nominal constant: this project's Zen 5 VMs say 2596 MHz and run at
~4030). A direct convolution cannot beat FLOP/cycle x the clock it ran at, so that is the
honest ceiling. The measured FMA throughput is not the basis: it measures a probe kernel
(what a compiler made of it, one thread per core), which a well-tuned library may beat by a
little, and it would tie every % of peak to the probe's quality.
An emulated board keeps its Pi's published clock: the clock qemu-user "measures" is not a Pi's.
Without a measured clock (no C compiler on the device) the nominal clock stays the basis, and
the run says so.

Works on result dicts (standard library only): the host applies it when it assembles a result
(harness/results/document.py), and reports read it back.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

NOMINAL_CLOCK = "nominal clock"
MEASURED_CLOCK = "measured clock"
BASES = (NOMINAL_CLOCK, MEASURED_CLOCK)
PINNED_GOVERNORS = ("performance",)


@dataclass(frozen=True)
class PeakBasis:
    basis: str  # NOMINAL_CLOCK or MEASURED_CLOCK
    clock_mhz: float  # the clock the peak assumes
    gflops: dict[str, float]  # per dtype (int8: GOP/s): cores x clock x FLOP/cycle, unrounded
    reason: str  # why this basis, in words

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def clock_pinned(state: dict[str, Any]) -> bool:
    """Whether the state shows a clock that cannot move: the `performance` governor, or the
    scaling minimum equal to the maximum on every core."""
    return state.get("governor") in PINNED_GOVERNORS or state.get("freq_fixed") is True


def peaks_at(device: dict[str, Any], clock_mhz: float) -> dict[str, float]:
    """cores x clock x FLOP/cycle for each dtype of a result's device block."""
    return {dtype: device["cores"] * clock_mhz / 1000 * fpc for dtype, fpc in device["flops_per_cycle"].items()}


def _nominal(device: dict[str, Any], reason: str) -> PeakBasis:
    mhz = 1000 * device["freq_ghz"]
    # The very numbers of peak_gflops, not a recomputation that could differ in the last bit.
    return PeakBasis(NOMINAL_CLOCK, mhz, dict(device["peak_gflops"]), reason)


def measured_clock(*states: dict[str, Any] | None) -> float | None:
    """The highest all-core clock measured in these states (before and after a run). A reading
    is CPU time over a chain of adds, so a core that was shared or still ramping up reads low,
    never high: here one run read 3893 MHz before and 4218 after, while its FMA probe did what
    only >= 4162 MHz can, and ORT's direct conv sat at 100.6 % of the 3893 MHz peak."""
    readings = [float(s["clock_mhz_measured"]) for s in states if s and (s.get("clock_mhz_measured") or 0) > 0]
    return max(readings) if readings else None


def choose_basis(device: dict[str, Any], state: dict[str, Any], after: dict[str, Any] | None = None) -> PeakBasis:
    """The peak % of peak is a share of, for a result's device block and its state before the
    run (and after it, whose clock reading counts too: measured_clock)."""
    if device.get("emulated"):
        return _nominal(device, "an emulated board: the peak is its Pi's at the Pi's clock "
                                "(a clock measured under qemu-user is not a Pi's)")
    if clock_pinned(state):
        return _nominal(device, f"the clock is pinned (governor {state.get('governor') or 'unknown'}"
                                f"{', min = max frequency' if state.get('freq_fixed') else ''})")
    unpinned = ("the clock is not pinned (" + (f"governor {state['governor']}" if state.get("governor")
                                                else "no cpufreq: a VM, or cpufreq not readable") + ")")
    measured = measured_clock(state, after)
    if measured is None:
        why = state.get("clock_note") or "not measured"
        return _nominal(device, f"{unpinned}, but the cores' clock could not be measured ({why}): "
                                "the peak assumes the nominal clock")
    return PeakBasis(MEASURED_CLOCK, float(measured), peaks_at(device, float(measured)),
                     f"{unpinned}: the cores ran at {measured:.0f} MHz with every core busy (the higher of the "
                     f"readings before and after the run) "
                     f"(nominal {1000 * device['freq_ghz']:.0f} MHz)")


def basis_of(doc: dict[str, Any]) -> PeakBasis:
    """The basis a result recorded; an older file, which recorded none, used the nominal clock."""
    recorded = doc["device"].get("peak")
    if recorded:
        return PeakBasis(recorded["basis"], recorded["clock_mhz"], dict(recorded["gflops"]), recorded["reason"])
    return _nominal(doc["device"], "recorded before the basis was (older result file): the nominal clock")


def pct_peak_gflops(doc: dict[str, Any]) -> dict[str, float]:
    """Per dtype, the peak a result's `pct_peak` is a share of."""
    return basis_of(doc).gflops


def apply_basis(doc: dict[str, Any]) -> PeakBasis:
    """Choose the basis from the result's own device and state, record it as `device.peak`, and
    make every layer's `pct_peak` a share of it. The device's runner computed them against the
    nominal peak; the host assembles every transport's result here (local, ssh, farm), so one
    rule in one place decides for all of them."""
    basis = choose_basis(doc["device"], doc["system"]["before"], doc["system"].get("after"))
    doc["device"]["peak"] = basis.to_json()
    for build in doc["builds"]:
        peak = basis.gflops.get(build.get("peak_dtype") or "fp32")
        for layer in build.get("layers") or []:
            if peak:
                layer["pct_peak"] = 100.0 * layer["gflops"] / peak
    return basis

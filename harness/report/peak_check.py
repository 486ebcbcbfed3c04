"""Is the peak right? What a result's own numbers say about the peak its % of peak uses.

A direct method cannot do more FLOPs than the arithmetic units can: a direct-method layer above
100 % of the peak (beyond its noise) means the peak is wrong, not that the layer is fast (the
clock it assumes is not the one the cores ran at, or the FLOP/cycle table is wrong for this
core). Layers that ran a fast algorithm (Winograd, FFT: harness/report/algorithms.py) count
FLOPs they did not do, and may legitimately exceed it. The same holds for the measured FMA
throughput: a probe cannot beat the arithmetic peak either.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.devices.fma import fma_gflops
from harness.devices.peak_basis import PeakBasis, basis_of
from harness.report.algorithms import fast_algorithm
from harness.runner.stats import summarize

# The FMA probe's best run may sit a little above a peak that is right (a timer's resolution, a
# core that briefly boosted past the measured all-core clock): only beyond this is it wrong.
FMA_TOLERANCE = 0.05
LISTED = 6  # layers named in a warning; the rest are counted


@dataclass(frozen=True)
class AbovePeak:
    build: str
    layer: str
    pct_peak: float  # the median's share of the peak, in %
    impl: str


def direct_layers_above_peak(doc: dict[str, Any]) -> list[AbovePeak]:
    """Direct-method layers faster than the peak even at their slower quartile's time (q3): a
    layer that crosses 100 % only through its noise is not listed."""
    basis = basis_of(doc)
    found = []
    for build in doc["builds"]:
        peak = basis.gflops.get(build.get("peak_dtype") or "fp32")
        if build["status"] != "ok" or not peak:
            continue
        for layer in build["layers"]:
            if not layer["flops"] or fast_algorithm(build["name"], layer):
                continue
            stats = summarize(layer["samples_ms"])
            if stats.q3 > 0 and layer["flops"] / (stats.q3 * 1e6) > peak:
                gflops = layer["flops"] / (stats.median * 1e6)
                found.append(AbovePeak(build["name"], layer["id"], 100 * gflops / peak, layer["impl"]))
    return found


def _what_the_peak_assumes(doc: dict[str, Any], basis: PeakBasis) -> str:
    dev = doc["device"]
    return (f"{dev['cores']} cores x {basis.clock_mhz:.0f} MHz ({basis.basis}) x "
            f"{dev['flops_per_cycle']['fp32']} fp32 FLOP/cycle")


def peak_warnings(doc: dict[str, Any]) -> list[str]:
    """Warnings that the peak a result's % of peak uses is wrong."""
    basis = basis_of(doc)
    warnings = []
    above = direct_layers_above_peak(doc)
    if above:
        named = ", ".join(f"{a.build} {a.layer} {a.pct_peak:.0f}% ({a.impl})" for a in above[:LISTED])
        more = f" and {len(above) - LISTED} more" if len(above) > LISTED else ""
        warnings.append(f"the peak is wrong: {len(above)} direct-method layer timing(s) above 100% of it beyond "
                        f"their noise ({named}{more}); a direct method cannot beat the arithmetic peak, which "
                        f"here assumes {_what_the_peak_assumes(doc, basis)}")
    fma = fma_gflops(doc["system"])
    if fma and not doc["device"].get("emulated") and fma["fp32"] > (1 + FMA_TOLERANCE) * basis.gflops["fp32"]:
        warnings.append(f"the peak is wrong: the measured FMA throughput, {fma['fp32']:.1f} GFLOP/s fp32, is above "
                        f"the peak of {basis.gflops['fp32']:.1f}, which assumes {_what_the_peak_assumes(doc, basis)}")
    return warnings


def clock_warning(doc: dict[str, Any]) -> str | None:
    """The measured clock far from the one the peak assumes (a pinned clock that did not hold,
    or an older file whose % of peak used the nominal clock). Not on an emulated board: the
    clock measured under qemu-user is not a Pi's, and its page already says so."""
    measured = doc["system"]["before"].get("clock_mhz_measured")
    if not measured or doc["device"].get("emulated"):
        return None
    basis = basis_of(doc)
    if abs(measured - basis.clock_mhz) <= 0.10 * basis.clock_mhz:
        return None
    return (f"the cores ran at ~{measured:.0f} MHz (measured), the peak assumes {basis.clock_mhz:.0f} MHz: "
            f"% of peak is relative to the {basis.basis}")

"""HTML rendering of report pages with jinja2, autoescaping everything.

Templates (harness/report/templates, package data) inline their CSS and JavaScript, so a page
needs nothing but itself and the PNG files beside it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jinja2

from harness.devices.config import EMULATED_LABEL
from harness.devices.peak_basis import NOMINAL_CLOCK
from harness.history import Regression
from harness.report import speedup as speedup_mod
from harness.report.compare import Comparison
from harness.report.table import peaks_text
from harness.report.view import MARKS, RunView


@dataclass(frozen=True)
class Figure:
    file: str  # relative to the page
    alt: str
    caption: str


def num(value: float | None) -> str:
    """A measured number with about three significant digits, never in e-notation."""
    if value is None:
        return ""
    for limit, digits in ((100, 0), (10, 1), (1, 2), (0.1, 3)):
        if abs(value) >= limit:
            return f"{value:.{digits}f}"
    return f"{value:.4f}"


def _freq(state: dict[str, Any] | None) -> str:
    if not state or not state.get("freq_mhz"):
        return "n/a"
    lo, hi = min(state["freq_mhz"]), max(state["freq_mhz"])
    text = f"{lo:.0f} MHz" if lo == hi else f"{lo:.0f}-{hi:.0f} MHz across cores"
    return text + (f" ({state['freq_source']})" if state.get("freq_source") else "")


STATE_FIELDS = (
    ("frequency", _freq),
    ("clock (measured)", lambda s: f"{s['clock_mhz_measured']:.0f} MHz, all cores busy"
     if s and s.get("clock_mhz_measured") else "n/a"),
    ("governor", lambda s: (s or {}).get("governor") or "n/a"),
    ("temperature", lambda s: f"{s['temp_c']:.1f} °C" if s and s.get("temp_c") is not None else "n/a"),
    ("throttled", lambda s: (s or {}).get("throttled") or "n/a"),
    ("load (1 min)", lambda s: f"{s['load_1m']:.2f}" if s else "n/a"),
)


QEMU_NOTE = " (under qemu-user: not a Pi's)"


def state_rows(system: dict[str, Any], emulated: bool = False) -> list[tuple[str, str, str]]:
    """(field, before, after) for the device-state table; 'n/a' where not recorded. On an
    emulated board the measured clock is qemu's, and the row says so."""
    def show_field(label: str, show: Callable[[dict[str, Any] | None], str], state: dict[str, Any] | None) -> str:
        text = show(state)
        return text + QEMU_NOTE if emulated and label == "clock (measured)" and text != "n/a" else text

    return [(label, show_field(label, show, system.get("before")),
             show_field(label, show, system.get("after")) if system.get("after") else "not recorded")
            for label, show in STATE_FIELDS]


@dataclass(frozen=True)
class PeakRow:
    label: str
    id: str
    text: str
    title: str = ""  # shown on hover: why, in full


def peak_rows(view: RunView) -> list[PeakRow]:
    """The Device card's compute rows: the peak % of peak is a share of (with its basis), the
    nominal clock's where that differs, and the measured FMA throughput beside them."""
    dev, basis = view.doc["device"], view.peak_basis
    fpc = dev["flops_per_cycle"]["fp32"]
    rows = [PeakRow("peak (basis of % peak)", "peaks",
                    f"{peaks_text(basis.gflops)} at the {basis.basis}: {dev['cores']} cores x "
                    f"{basis.clock_mhz:.0f} MHz x {fpc} fp32 FLOP/cycle", basis.reason)]
    if basis.basis != NOMINAL_CLOCK:
        rows.append(PeakRow("peak at the nominal clock", "peak-nominal",
                            f"{peaks_text(dev['peak_gflops'])} at {1000 * dev['freq_ghz']:.0f} MHz (not used for % peak)"))
    rows.append(PeakRow("FMA throughput (measured)", "fma-peak", fma_text(view, basis.gflops["fp32"])))
    return rows


def fma_text(view: RunView, peak_fp32: float) -> str:
    record = view.doc["system"].get("fma_peak")
    fma = view.fma_gflops
    if fma is None:
        return f"not measured: {record['note']}" if record else "not measured in this result"
    text = f"{fma['fp32']:.1f} GFLOP/s fp32 ({100 * fma['fp32'] / peak_fp32:.0f}% of the peak)"
    text += f", {fma['fp16']:.1f} fp16" if fma["fp16"] else "; fp16 is computed in fp32 (no fp16 arithmetic)"
    text += f": the achievable ceiling, {record['fp32']['kernel']} on every core"
    return text + QEMU_NOTE if view.doc["device"].get("emulated") else text


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.globals.update(num=num, state_rows=state_rows, marks=MARKS, emulated_label=EMULATED_LABEL,
                       peaks_text=peaks_text, peak_rows=peak_rows)
    return env


def render_report(view: RunView, figures: Sequence[Figure], history: Figure | None,
                  history_note: str, regressions: Sequence[Regression],
                  history_band: Figure | None = None) -> str:
    above = view.above_peak
    return environment().get_template("report.html").render(
        view=view, figures=figures, history=history, history_note=history_note, history_band=history_band,
        regressions=regressions, commits=[c[:12] for c in view.commits],
        speedups=view.baseline_note is None, speedup_method=speedup_mod.METHOD,
        above_peak_explained=all(cell.algorithm for _, _, cell in above))


def render_compare(title: str, device: str, model: str, a_files: Sequence[str], b_files: Sequence[str],
                   comparisons: Sequence[tuple[Comparison, Figure]], significance: str) -> str:
    return environment().get_template("compare.html").render(
        title=title, device=device, model=model, a_files=a_files, b_files=b_files,
        comparisons=comparisons, significance=significance,
        speedup_method_short=f"{speedup_mod.LEVEL:.0%} percentile bootstrap CI over the raw samples "
                             f"({speedup_mod.RESAMPLES} resamples, seed {speedup_mod.SEED})")


def render_networks(device: str, views: Sequence[tuple[str, str, RunView]], baseline: str) -> str:
    """The networks side by side: (model, link to its page, its view) each."""
    builds = list(dict.fromkeys(b.name for _, _, v in views for b in v.builds))
    builds.sort(key=lambda b: b != baseline)  # the baseline's column first, as on each page
    commits = list(dict.fromkeys(c[:12] for _, _, v in views for c in v.commits))
    return environment().get_template("networks.html").render(
        device=device, baseline=baseline, builds=builds, commits=commits,
        views=[(m, link, v, {b.name: b for b in v.builds}) for m, link, v in views],
        speedup_method=speedup_mod.METHOD)

"""Per-layer comparison of two builds, or of the same builds in two runs (commits or files).

speedup = median(A) / median(B): > 1 means B is faster than A, with a bootstrap CI
(report/speedup.py). Whether a change is significant is decided by the nightly's own test,
harness.history.compare_samples, so the page and `harness compare` agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from harness.errors import UserError
from harness.history import Change, compare_samples
from harness.report.speedup import Speedup, speedup
from harness.report.view import BuildRun, RunView

# Passed to compare_samples explicitly, so the page can say what "significant" meant.
THRESHOLD = 0.05
ALPHA = 0.01
SIGNIFICANCE = (f"harness.history.compare_samples: a two-sided Mann-Whitney U test on the raw samples; "
                f"a change counts when p < {ALPHA} and the median moves by at least {THRESHOLD:.0%} "
                "(with fewer than 6 samples a side, p cannot get that low)")


def _change(a: list[float], b: list[float]) -> Change:
    return compare_samples(a, b, threshold=THRESHOLD, alpha=ALPHA)


@dataclass
class CompareRow:
    layer: str
    op: str
    flops: int
    a_ms: float
    b_ms: float
    speedup: Speedup
    change: Change  # A -> B; change.verdict is "faster", "slower" or "same"


@dataclass
class Comparison:
    title: str
    a: str  # labels of the two sides
    b: str
    a_e2e_ms: float
    b_e2e_ms: float
    e2e: Speedup
    e2e_change: Change
    rows: list[CompareRow]
    missing: list[str]  # layers on one side only


def compare_build_runs(title: str, a_label: str, a: BuildRun, b_label: str, b: BuildRun) -> Comparison:
    a_layers, b_layers = a.layers, b.layers
    rows = [CompareRow(lid, layer["op"], layer["flops"], median(layer["samples_ms"]),
                       median(b_layers[lid]["samples_ms"]),
                       speedup(layer["samples_ms"], b_layers[lid]["samples_ms"]),
                       _change(layer["samples_ms"], b_layers[lid]["samples_ms"]))
            for lid, layer in a_layers.items() if lid in b_layers]
    missing = sorted(set(a_layers) ^ set(b_layers))
    return Comparison(title, a_label, b_label, a.e2e.median, b.e2e.median,
                      speedup(a.samples, b.samples), _change(a.samples, b.samples), rows, missing)


def _ok_build(view: RunView, name: str, where: str) -> BuildRun:
    for build in view.builds:
        if build.name == name:
            if not build.ok or build.e2e is None:
                raise UserError(f"build {name} failed in {where}: {build.record.get('message')}")
            return build
    raise UserError(f"build {name} is not in {where} (builds there: "
                    f"{', '.join(b.name for b in view.builds) or 'none'})")


def compare_builds(view: RunView, a: str, b: str) -> list[Comparison]:
    where = ", ".join(s.path.name for s in view.sources)
    return [compare_build_runs(f"{b} against {a}", a, _ok_build(view, a, where),
                               b, _ok_build(view, b, where))]


def compare_runs(a: RunView, a_label: str, b: RunView, b_label: str) -> list[Comparison]:
    """One comparison per build that ran successfully on both sides."""
    b_ok = {build.name: build for build in b.ok_builds if build.e2e is not None}
    comparisons = [compare_build_runs(f"{build.name}: {b_label} against {a_label}",
                                      a_label, build, b_label, b_ok[build.name])
                   for build in a.ok_builds if build.name in b_ok and build.e2e is not None]
    if not comparisons:
        raise UserError(f"no build ran successfully in both {a_label} and {b_label}")
    return comparisons

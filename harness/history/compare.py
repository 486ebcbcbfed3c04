"""`harness compare`: per-layer speedups between two commits / result files, or two builds.

    harness compare A B                         A, B: commits (stored results) or result files
    harness compare A --builds tvm-nnpack caffe2-nnpack     two builds within one commit/file

speedup = median(before) / median(after): > 1 means the second side is faster. Whether a
change counts is harness.history.compare_samples (Mann-Whitney U, `alpha`, `threshold`), the
same test `harness nightly` uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from harness.errors import UserError
from harness.history.detect import Change, compare_samples
from harness.results.frame import e2e_frame, layers_frame

E2E = "(end to end)"


@dataclass(frozen=True)
class Row:
    build: str  # "a -> b" when two builds are compared
    layer: str
    change: Change

    @property
    def speedup(self) -> float:
        return 1 / self.change.ratio if self.change.ratio else float("inf")


@dataclass(frozen=True)
class Table:
    a: str  # labels of the two sides
    b: str
    threshold: float
    alpha: float
    rows: list[Row]

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.change.verdict == "slower"]


def _samples(paths: list[Path]) -> dict[tuple[str, str], list[float]]:
    """(build, layer) -> pooled raw ms samples of the ok builds in `paths`; layer E2E too."""
    pooled: dict[tuple[str, str], list[float]] = {}
    layers, e2e = layers_frame(paths), e2e_frame(paths)
    if not e2e.empty:
        for _, r in e2e[e2e["status"] == "ok"].iterrows():
            pooled.setdefault((r["build"], E2E), []).extend(r["samples_ms"])
    if not layers.empty:
        for _, r in layers[layers["status"] == "ok"].iterrows():
            pooled.setdefault((r["build"], r["layer"]), []).extend(r["samples_ms"])
    return pooled


def _rows(pairs: list[tuple[str, str, list[float], list[float]]], threshold: float,
          alpha: float) -> list[Row]:
    return [Row(build, layer, compare_samples(a, b, threshold, alpha)) for build, layer, a, b in pairs]


def compare_runs(a_label: str, a_paths: list[Path], b_label: str, b_paths: list[Path],
                 threshold: float = 0.05, alpha: float = 0.01) -> Table:
    a, b = _samples(a_paths), _samples(b_paths)
    common = [key for key in a if key in b]
    if not common:
        raise UserError(f"no build ran successfully in both {a_label} and {b_label}")
    return Table(a_label, b_label, threshold, alpha,
                 _rows([(bld, layer, a[(bld, layer)], b[(bld, layer)]) for bld, layer in common],
                       threshold, alpha))


def compare_builds(label: str, paths: list[Path], build_a: str, build_b: str,
                   threshold: float = 0.05, alpha: float = 0.01) -> Table:
    pooled = _samples(paths)
    for build in (build_a, build_b):
        if not any(key[0] == build for key in pooled):
            ran = sorted({key[0] for key in pooled})
            raise UserError(f"build {build} did not run successfully in {label} "
                            f"(builds that did: {', '.join(ran) or 'none'})")
    layers = [layer for bld, layer in pooled if bld == build_a and (build_b, layer) in pooled]
    return Table(f"{build_a} ({label})", f"{build_b} ({label})", threshold, alpha,
                 _rows([(f"{build_a} -> {build_b}", layer, pooled[(build_a, layer)],
                         pooled[(build_b, layer)]) for layer in layers], threshold, alpha))


def _cells(row: Row) -> list[str]:
    c = row.change
    mark = {"slower": "REGRESSION", "faster": "improved", "same": ""}[c.verdict]
    return [row.build, row.layer, f"{c.before_ms:.4g}", f"{c.after_ms:.4g}", f"{row.speedup:.3f}x",
            f"{(c.ratio - 1) * 100:+.1f}%", f"{c.p_value:.2g}", mark]


HEADERS = ["build", "layer", "before ms", "after ms", "speedup", "time change", "p", "verdict"]


def _legend(table: Table) -> str:
    return (f"before = {table.a}, after = {table.b}. speedup = before / after (> 1: faster). "
            f"A change counts when a two-sided Mann-Whitney U test gives p < {table.alpha} and "
            f"the median moves by at least {table.threshold:.0%}.")


def to_markdown(table: Table) -> str:
    lines = [f"| {' | '.join(HEADERS)} |", f"|{'|'.join('---' for _ in HEADERS)}|"]
    lines += [f"| {' | '.join(_cells(r))} |" for r in table.rows]
    found = ", ".join(f"{r.build} {r.layer}" for r in table.regressions) or "none"
    return "\n".join([*lines, "", _legend(table), f"Regressions: {found}", ""])


_HTML = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}td:nth-child(-n+2){text-align:left}
tr.slower{background:#fdd}tr.faster{background:#dfd}</style></head>
<body><h1>{{ title }}</h1><p>{{ legend }}</p>
<table><thead><tr>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for row, cells in rows %}<tr class="{{ row.change.verdict }}">{% for c in cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></body></html>
""")


def to_html(table: Table) -> str:
    return _HTML.render(title=f"{table.b} against {table.a}", legend=_legend(table), headers=HEADERS,
                        rows=[(r, _cells(r)) for r in table.rows])


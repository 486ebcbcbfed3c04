"""`harness compare`: per-layer changes between two commits / result files, or two builds.

    harness compare A B                         A, B: commits (stored results) or result files
    harness compare A --builds tvm-nnpack caffe2-nnpack     two builds within one commit/file
    harness compare A B --models unet,mobilenet-v2          one table per network

Each result file is one run; a commit's side is all its stored runs. Whether a change counts is
harness.history.verdict (the run as the unit, noise from the machine's history), the same
rule `harness nightly` and `harness regressions` use. Sides measured on different machines
(hardware fingerprints) are not compared: one line says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jinja2
import pandas as pd

from harness.errors import UserError
from harness.history.judging import E2E, Judged, Judgement, judge_frames
from harness.history.verdict import RunChange
from harness.results.frame import e2e_frame, layers_frame

@dataclass(frozen=True)
class Row:
    build: str  # "a -> b" when two builds are compared
    layer: str
    change: RunChange

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
    note: str | None = None  # machine changed / not an ancestor: said above the table
    software: tuple[str, ...] = ()
    adjusted: bool = False  # layers judged beyond their run's common shift (judging.run_shifts)
    model: str | None = None  # named in the heading when several networks are compared

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.change.verdict == "slower"]


def run_rows(paths: list[Path]) -> pd.DataFrame:
    """One row per run x build x layer, the end-to-end time as layer E2E."""
    layers, e2e = layers_frame(paths), e2e_frame(paths)
    if not e2e.empty:
        e2e = e2e[e2e["samples_ms"].notna()].assign(layer=E2E)
    frames = [f for f in (e2e, layers) if not f.empty]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    return rows.assign(commit=rows["commit"].fillna(rows["file"]))


def _table(judgement: Judgement, threshold: float, alpha: float, note: str | None = None) -> Table:
    rows = [Row(j.build, j.layer, j.change) for j in judgement.judged]
    return Table(judgement.a, judgement.b, threshold, alpha, rows,
                 "; ".join(filter(None, [judgement.machine_note or note, judgement.busy_note])) or None,
                 tuple(judgement.software_notes), judgement.adjusted)


def compare_runs(a_label: str, a_paths: list[Path], b_label: str, b_paths: list[Path],
                 threshold: float = 0.05, alpha: float = 0.01, history: pd.DataFrame | None = None,
                 note: str | None = None) -> Table:
    a, b = run_rows(a_paths), run_rows(b_paths)
    judgement = judge_frames(a_label, a, b_label, b, history, threshold, alpha)
    if not judgement.judged and not judgement.machine_note:
        raise UserError(f"no build ran successfully in both {a_label} and {b_label}")
    return _table(judgement, threshold, alpha, note)


def compare_builds(label: str, paths: list[Path], build_a: str, build_b: str,
                   threshold: float = 0.05, alpha: float = 0.01) -> Table:
    rows = run_rows(paths)
    ok = rows[rows["status"] == "ok"] if not rows.empty else rows
    for build in (build_a, build_b):
        if ok.empty or build not in set(ok["build"]):
            ran = sorted(set(ok["build"])) if not ok.empty else []
            raise UserError(f"build {build} did not run successfully in {label} "
                            f"(builds that did: {', '.join(ran) or 'none'})")
    # The two builds ran interleaved in the same runs: one session, no session shift between.
    pair = f"{build_a} -> {build_b}"
    a = ok[ok["build"] == build_a].assign(build=pair)
    b = ok[ok["build"] == build_b].assign(build=pair)
    judgement = judge_frames(f"{build_a} ({label})", a, f"{build_b} ({label})", b, None,
                             threshold, alpha, same_session=True)
    return _table(judgement, threshold, alpha)


def _cells(row: Row) -> list[str]:
    c = row.change
    mark = {"slower": "REGRESSION", "faster": "improved", "same": ""}[c.verdict]
    return [row.build, row.layer, f"{c.before_ms:.4g}", f"{c.after_ms:.4g}", f"{row.speedup:.3f}x",
            f"{c.effect * 100:+.1f}%", f"{(c.ci_low - 1) * 100:+.1f}% .. {(c.ci_high - 1) * 100:+.1f}%",
            f"±{c.band * 100:.1f}%", f"{c.runs_before}/{c.runs_after}", f"{c.p_value:.2g}", mark]


HEADERS = ["build", "layer", "before ms", "after ms", "speedup", "time change", "95% CI",
           "noise band", "runs", "p", "verdict"]


def _legend(table: Table) -> str:
    return (f"before = {table.a}, after = {table.b}; ms = geometric mean of the run medians. "
            "speedup = before / after (> 1: faster). 95% CI: bootstrap over run medians. "
            f"A change counts when it is at least {table.threshold:.0%}, outside the noise band "
            f"(between-run and between-session noise from the machine's history: p < {table.alpha} "
            "over all the series together) "
            "and its CI excludes 0."
            + (" Speedup, time change and CI of a layer are its change beyond its build's common shift "
               "between runs (the median over the build's layers, which moves whole runs on a shared "
               "machine); the end-to-end row is not adjusted, so a change of every layer shows there."
               if table.adjusted else ""))


def to_markdown(table: Table) -> str:
    head = [f"## {table.model}", ""] if table.model else []
    head += [table.note, ""] if table.note else []
    if table.software:
        head += [f"software changed: {'; '.join(table.software)}", ""]
    if not table.rows:
        return "\n".join([*head, ""])
    lines = [f"| {' | '.join(HEADERS)} |", f"|{'|'.join('---' for _ in HEADERS)}|"]
    lines += [f"| {' | '.join(_cells(r))} |" for r in table.rows]
    found = ", ".join(f"{r.build} {r.layer}" for r in table.regressions) or "none"
    return "\n".join([*head, *lines, "", _legend(table), f"Regressions: {found}", ""])


_HTML = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}td:nth-child(-n+2){text-align:left}
tr.slower{background:#fdd}tr.faster{background:#dfd}</style></head>
<body><h1>{{ title }}</h1>
{% for t in tables %}<section{% if t.model %} id="model-{{ t.model }}"{% endif %}>
{% if t.model %}<h2>{{ t.model }}</h2>{% endif %}
{% if t.note %}<p><strong>{{ t.note }}</strong></p>{% endif %}
{% for s in t.software %}<p>software changed: {{ s }}</p>{% endfor %}<p>{{ t.legend }}</p>
<table><thead><tr>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for row, cells in t.rows %}<tr class="{{ row.change.verdict }}">{% for c in cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></section>
{% endfor %}</body></html>
""")


def to_html(tables: Sequence[Table]) -> str:
    """One page: a section per table (per network when several were compared)."""
    first = tables[0]
    return _HTML.render(title=f"{first.b} against {first.a}", headers=HEADERS,
                        tables=[{"model": t.model, "note": t.note, "software": t.software, "legend": _legend(t),
                                 "rows": [(r, _cells(r)) for r in t.rows]} for t in tables])


__all__ = ["E2E", "Judged", "Row", "Table", "compare_builds", "compare_runs", "to_html", "to_markdown"]

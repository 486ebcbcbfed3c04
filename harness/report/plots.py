"""The report's figures, drawn with matplotlib's Agg canvas into PNG bytes.

Figures are made with matplotlib.figure.Figure directly (no pyplot), so no global state or GUI
backend is involved. Nothing is clipped: an axis always reaches the largest point, so an
effective GFLOP/s above the device's peak shows as such.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from harness.history import Regression, per_commit
from harness.history.verdict import LOOKBACK, estimate_noise
from harness.report.compare import Comparison
from harness.report.view import RunView

DPI = 100
MARKERS = "osD^v<>ph*"


def _text(label: str) -> str:
    """A label drawn literally: '$' would otherwise start matplotlib's math text."""
    return label.replace("$", r"\$")


def to_png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _peaks(view: RunView) -> dict[str, float]:
    """Each distinct peak the builds are measured against, by dtype."""
    return {b.record.get("peak_dtype") or "fp32": b.peak for b in view.ok_builds}


def _basis_label(view: RunView) -> str:
    """'at the measured clock, 4028 MHz': the clock the drawn peaks assume."""
    return f"at the {view.peak_basis.basis}, {view.peak_basis.clock_mhz:.0f} MHz"


def _fma_ceiling(view: RunView, dtype: str) -> tuple[float, str] | None:
    """The measured FMA throughput for `dtype`'s ceiling, and its label; None without one.
    fp16 without fp16 arithmetic is computed in fp32, so its ceiling is fp32's; int8 has no FMA."""
    fma = view.fma_gflops
    if fma is None or dtype == "int8":
        return None
    measured = fma.get(dtype) or fma["fp32"]
    shown = dtype if fma.get(dtype) else "fp32"
    qemu = " (under qemu-user: not a Pi's)" if view.doc["device"].get("emulated") else ""
    return measured, f"achievable: measured FMA throughput {measured:.1f} GFLOP/s {shown}{qemu}"


def gflops_by_layer(view: RunView) -> Figure:
    rows = view.rows
    fig = Figure(figsize=(max(8.0, 0.35 * len(rows) + 3), 4.8))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    top = max(_peaks(view).values(), default=1.0)
    for i, build in enumerate(view.ok_builds):
        ys = np.array([row.cells[build.name].gflops if build.name in row.cells else np.nan for row in rows])
        ys[ys <= 0] = np.nan  # a log axis has no zero; such layers (0 FLOPs) are left out
        ax.plot(x, ys, MARKERS[i % len(MARKERS)], label=_text(build.name), alpha=0.85)
        top = max(top, np.nanmax(ys) if np.isfinite(ys).any() else 0)
    for dtype, peak in _peaks(view).items():
        ax.axhline(peak, color="black", linestyle="--", linewidth=1)
        unit = "GOP/s" if dtype == "int8" else "GFLOP/s"
        ax.annotate(f"device peak {dtype} {peak:.1f} {unit} {_basis_label(view)} (direct convolution)", (0, peak),
                    xytext=(2, 3), textcoords="offset points", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=top * 2)
    ax.set_xticks(x, [_text(row.id) for row in rows], rotation=60, ha="right", fontsize=8)
    int8 = ", GOP/s for int8 builds" if "int8" in _peaks(view) else ""
    ax.set_ylabel(f"GFLOP/s (effective: direct-convolution FLOPs / time{int8})")
    ax.set_title("Per-layer GFLOP/s by build")
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def roofline(view: RunView) -> Figure:
    fig = Figure(figsize=(8.5, 6))
    ax = fig.add_subplot()
    peak_dtype, peak = max(_peaks(view).items(), key=lambda kv: kv[1],
                           default=("fp32", view.peak_basis.gflops["fp32"]))
    bw = view.bandwidth_gb_s
    fma = _fma_ceiling(view, peak_dtype)
    points_x: list[float] = []
    points_y: list[float] = []
    for i, build in enumerate(view.ok_builds):
        xs, ys, above = [], [], []
        for row in view.rows:
            cell = row.cells.get(build.name)
            if cell is None or row.intensity is None or cell.gflops <= 0 or row.intensity <= 0:
                continue
            xs.append(row.intensity)
            ys.append(cell.gflops)
            above.append(cell.above_peak)
        lines = ax.plot(xs, ys, MARKERS[i % len(MARKERS)], label=_text(build.name), alpha=0.85)
        ring = [(x, y) for x, y, a in zip(xs, ys, above) if a]
        if ring:
            ax.plot(*zip(*ring), "o", markersize=14, markerfacecolor="none",
                    markeredgecolor=lines[0].get_color(), markeredgewidth=1.5)
        points_x += xs
        points_y += ys
    lo = min(points_x + [peak / bw if bw else 1.0]) / 2
    hi = max(points_x + [peak / bw if bw else 1.0]) * 2
    grid = np.geomspace(lo, hi, 200)
    ax.plot(grid, np.full_like(grid, peak), "k-", linewidth=1.5,
            label=f"compute ceiling: device peak {peak:.1f} GFLOP/s {peak_dtype} {_basis_label(view)}")
    if fma:
        ax.plot(grid, np.full_like(grid, fma[0]), "k-.", linewidth=1, label=fma[1])
    if bw:
        ax.plot(grid, bw * grid, "k:", linewidth=1.5,
                label=f"memory ceiling: measured {bw:.1f} GB/s x FLOP/byte")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ceilings = [peak] + ([fma[0]] if fma else [])
    ax.set_ylim(bottom=min(points_y + ceilings) / 3, top=max(points_y + ceilings) * 3)
    ax.set_xlabel("arithmetic intensity (layer FLOPs / bytes moved)")
    ax.set_ylabel("GFLOP/s (effective)")
    ax.set_title("Roofline: one point per layer and build (ringed: above the peak)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def history_heatmap(runs: pd.DataFrame, marks: Sequence[Regression], layer_order: Sequence[str]) -> Figure | None:
    """One panel per build: layers x commits, coloured by time against the first commit, with
    the regressions boxed. None with fewer than two commits (nothing to show yet)."""
    points = per_commit(runs)
    if points.empty or points["commit"].nunique() < 2:
        return None
    commits = list(dict.fromkeys(points["commit"]))
    builds = list(dict.fromkeys(points["build"]))
    layers = [lid for lid in layer_order if lid in set(points["layer"])]
    layers += [lid for lid in dict.fromkeys(points["layer"]) if lid not in layers]
    fig = Figure(figsize=(max(6.0, 1.6 + 0.55 * len(commits)) * min(len(builds), 3) / 1.2,
                          (1.2 + 0.22 * len(layers)) * -(-len(builds) // 3)), layout="constrained")
    cols = min(len(builds), 3)
    image = None
    for k, build in enumerate(builds):
        ax = fig.add_subplot(-(-len(builds) // cols), cols, k + 1)
        table = (points[points["build"] == build].pivot(index="layer", columns="commit", values="median_ms")
                 .reindex(index=layers, columns=commits))
        first = table.apply(lambda r: r.dropna().iloc[0] if r.notna().any() else np.nan, axis=1)
        rel = np.log2(table.div(first, axis=0).to_numpy(dtype=float))
        image = ax.imshow(np.ma.masked_invalid(rel), cmap="RdYlGn_r", vmin=-1, vmax=1, aspect="auto")
        for reg in marks:
            if reg.build == build and reg.layer in layers and reg.commit in commits:
                ax.add_patch(Rectangle((commits.index(reg.commit) - 0.5, layers.index(reg.layer) - 0.5),
                                       1, 1, fill=False, edgecolor="black", linewidth=2.5))
        ax.set_title(_text(build), fontsize=10)
        ax.set_xticks(range(len(commits)), [_text(str(c)[:8]) for c in commits], rotation=60,
                      ha="right", fontsize=7)
        ax.set_yticks(range(len(layers)), [_text(lid) for lid in layers] if k % cols == 0 else [], fontsize=7)
    fig.suptitle("Per-layer time across commits, relative to each layer's first commit "
                 "(black box: regression)", fontsize=10)
    bar = fig.colorbar(image, ax=fig.axes, shrink=0.8)
    bar.set_label("log2(time / first time): red is slower")
    return fig


BAND_Z = 2.576  # two-sided 1 %: the verdict's default alpha


def _band(groups: list[np.ndarray], i: int) -> tuple[float, float] | None:
    """(centre, relative half-width) of the noise band commit i is judged against: the
    lookback commits before it (their median level, and the between-run and between-session
    noise of harness.history.verdict)."""
    past = [g for g in groups[max(0, i - LOOKBACK):i] if g.size]
    if not past:
        return None
    noise = estimate_noise(past)
    k = float(np.mean([g.size for g in past]))
    sd = float(np.sqrt(noise.tau**2 + noise.sigma**2 / k))
    return float(np.median([np.exp(np.log(g).mean()) for g in past])), float(np.expm1(BAND_Z * sd))


def _band_series(points: pd.DataFrame, marks: Sequence[Regression], limit: int) -> list[tuple[str, str]]:
    """The marked series first, then the ones whose level moves most, at most `limit`."""
    marked = [(r.build, r.layer) for r in marks]
    spread = (points.groupby(["build", "layer"], sort=False)["median_ms"]
              .agg(lambda s: float(np.log(s).std()) if len(s) > 1 else 0.0).sort_values(ascending=False))
    keys = list(dict.fromkeys([*marked, *spread.index]))
    return keys[:limit]


def history_band(runs: pd.DataFrame, marks: Sequence[Regression], limit: int = 6) -> Figure | None:
    """Per series (build x layer, one machine): each run's median (dots), each commit's level
    (line) and the noise band a commit is judged against (shaded: the lookback's level +- the
    change that would just be significant). None with fewer than two commits."""
    points = per_commit(runs)
    if points.empty or points["commit"].nunique() < 2:
        return None
    keys = _band_series(points, marks, limit)
    fig = Figure(figsize=(9, 2.2 * len(keys)), layout="constrained")
    for k, (build, layer) in enumerate(keys):
        ax = fig.add_subplot(len(keys), 1, k + 1)
        series = points[(points["build"] == build) & (points["layer"] == layer)].reset_index(drop=True)
        groups = [np.asarray(r, float) for r in series["run_medians_ms"]]
        x = np.arange(len(series))
        for i, g in enumerate(groups):
            ax.plot(np.full(g.size, i), g, ".", color="tab:blue", alpha=0.6)
        ax.plot(x, [np.exp(np.log(g).mean()) for g in groups], "-", color="tab:blue", linewidth=1)
        bands = [_band(groups, i) for i in range(len(groups))]
        lo = [c * (1 - w) if c else np.nan for c, w in (b or (np.nan, np.nan) for b in bands)]
        hi = [c * (1 + w) if c else np.nan for c, w in (b or (np.nan, np.nan) for b in bands)]
        ax.fill_between(x, lo, hi, color="tab:gray", alpha=0.25, step="mid", label="noise band (p = 0.01)")
        for r in marks:
            if (r.build, r.layer) == (build, layer) and r.commit in list(series["commit"]):
                ax.axvline(list(series["commit"]).index(r.commit), color="tab:red", linestyle="--")
        ax.set_title(_text(f"{build} {layer}"), fontsize=9)
        ax.set_ylabel("ms", fontsize=8)
        ax.set_xticks(x, [_text(str(c)[:8]) for c in series["commit"]], rotation=60, ha="right", fontsize=7)
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Run medians (dots) and commit level (line) in commit order; shaded: the noise band "
                 "each commit is judged against; dashed red: open regression", fontsize=9)
    return fig


def speedup_chart(comparison: Comparison) -> Figure:
    rows = comparison.rows
    fig = Figure(figsize=(8, 1.2 + 0.28 * len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ratio = np.array([r.speedup.ratio for r in rows])
    low = np.array([r.speedup.low for r in rows])
    high = np.array([r.speedup.high for r in rows])
    colours = [{"faster": "tab:green", "slower": "tab:red"}.get(r.change.verdict, "tab:gray") for r in rows]
    ax.barh(y, ratio - 1, left=1, color=colours, alpha=0.8)
    ax.errorbar(ratio, y, xerr=[ratio - low, high - ratio], fmt="none", ecolor="black", capsize=2)
    ax.axvline(1, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(y, [_text(r.layer) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"speedup of {_text(comparison.b)} over {_text(comparison.a)} "
                  "(> 1 is faster; whiskers: 95% bootstrap CI; colour: significant change)")
    ax.set_title(_text(comparison.title), fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return fig

"""Writing report pages: reports/<device>/<name>/index.html with its PNG files beside it.

Each file is written atomically and the page last, so an interrupted report never leaves a
page pointing at half-written images.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure as MplFigure

from harness.report import plots
from harness.report.compare import SIGNIFICANCE, compare_builds, compare_runs
from harness.errors import UserError
from harness.report.html import Figure, render_compare, render_networks, render_report
from harness.report.timeline import history_runs, regression_marks
from harness.report.view import DEFAULT_BASELINE, RunView, run_view
from harness.results.document import REPO
from harness.fileio import write_atomic
from harness.results.store import RESULTS_DIR, load_result

REPORTS_DIR = REPO / "reports"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def path_part(text: str) -> str:
    """`text` as one safe path component: device names and labels come from result files."""
    return _UNSAFE.sub("_", text).strip("._")[:80] or "unnamed"


def page_dir(out_root: Path, device: str, name: str) -> Path:
    return Path(out_root) / path_part(device) / path_part(name)


def _figure(out: Path, file: str, fig: MplFigure, alt: str, caption: str) -> Figure:
    write_atomic(out / file, plots.to_png(fig))
    return Figure(file, alt, caption)


def default_name(view: RunView) -> str:
    """The commit and the run: two runs of one commit on one device get two pages, so a
    report never replaces another run's page (older files without a run id: the file name)."""
    newest = view.sources[-1]
    run = newest.doc.get("run_id") or newest.path.stem
    return f"{newest.commit[:12]}-{run}" if newest.commit else run


def _run_figures(view: RunView, out: Path) -> list[Figure]:
    if not view.ok_builds:
        return []
    bw = view.bandwidth_gb_s
    return [
        _figure(out, "gflops.png", plots.gflops_by_layer(view), "per-layer GFLOP/s by build",
                "Per-layer effective GFLOP/s of each build (log scale), with the device's "
                "direct-convolution peak as a dashed line. Layers with no FLOPs are left out."),
        _figure(out, "roofline.png", plots.roofline(view), "roofline",
                "Roofline: arithmetic intensity (layer FLOPs / bytes moved) against effective "
                "GFLOP/s, one point per layer and build. Compute ceiling: the device peak; memory "
                + (f"ceiling: the measured bandwidth, {bw:.1f} GB/s." if bw else
                   "ceiling: not drawn, this result has no measured bandwidth.")
                + " Ringed points are above the peak (see the note on effective FLOPs)."),
    ]


def by_model(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """The result files grouped by the network they measured, in the order first met."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(load_result(path)["model"]["name"], []).append(Path(path))
    return groups


def write_report(paths: Sequence[Path], out_root: Path = REPORTS_DIR, *,
                 baseline: str = DEFAULT_BASELINE, name: str | None = None,
                 results_root: Path = RESULTS_DIR,
                 history_commits: Sequence[str] | None = None) -> Path:
    """The page of `paths`: one network's report, or, for several networks, a page listing
    them side by side (end-to-end medians and speedups) with each network's own report, and
    its own history, in a folder beside it."""
    groups = by_model(paths)
    if len(groups) == 1:
        return write_run_report(paths, out_root, baseline=baseline, name=name, results_root=results_root,
                                history_commits=history_commits)
    views = {model: run_view(files, baseline) for model, files in groups.items()}
    devices = sorted({v.doc["device"]["name"] for v in views.values()})
    if len(devices) > 1:
        raise UserError(f"the result files are for different devices ({', '.join(devices)}); "
                        "report on one device at a time")
    newest = max(views.values(), key=lambda v: v.sources[-1].created)
    out = page_dir(out_root, devices[0], name or f"{default_name(newest)}-networks")
    listed = []
    for model, files in groups.items():
        page = write_run_report(files, out_root, baseline=baseline, results_root=results_root,
                                history_commits=history_commits, folder=out / path_part(model), view=views[model])
        listed.append((model, page.relative_to(out).as_posix(), views[model]))
    page = out / "index.html"
    write_atomic(page, render_networks(devices[0], listed, baseline))
    return page


def write_run_report(paths: Sequence[Path], out_root: Path = REPORTS_DIR, *,
                     baseline: str = DEFAULT_BASELINE, name: str | None = None,
                     results_root: Path = RESULTS_DIR,
                     history_commits: Sequence[str] | None = None, folder: Path | None = None,
                     view: RunView | None = None) -> Path:
    """The report page of `paths` (one device and model); its history is every stored run of
    that device and model (limited to `history_commits` when given) plus `paths`. folder: where
    the page goes (default: out_root/<device>/<name>). view: run_view(paths, baseline), when the
    caller has it already (the networks page)."""
    view = view or run_view(paths, baseline)
    device, model = view.doc["device"]["name"], view.doc["model"]["name"]
    out = folder or page_dir(out_root, device, name or default_name(view))
    figures = _run_figures(view, out)
    runs = history_runs(device, model, Path(results_root), [s.path for s in view.sources], history_commits)
    marks = regression_marks(runs)
    fig = plots.history_heatmap(runs, marks, [row.id for row in view.rows])
    history = band = None
    if fig is not None:
        history = _figure(out, "history.png", fig, "per-layer history across commits",
                          "Per-layer median time at each commit (commit order) relative to that "
                          "layer's first commit; open regressions (`harness regressions`: step "
                          "detection confirmed by the run-level verdict) are boxed.")
        band_fig = plots.history_band(runs, marks)
        band = band_fig and _figure(out, "history-band.png", band_fig, "noise band of the history",
                                    "Run medians and the noise band each commit is judged against, "
                                    "for the open regressions and the series that move most.")
    n_commits = runs["commit"].nunique() if not runs.empty else 0
    note = (f"History needs results from at least two commits of {model} on {device}; "
            f"found {n_commits} under {results_root}.")
    page = out / "index.html"
    write_atomic(page, render_report(view, figures, history, note, marks, band))
    return page


def write_compare_report(a: str, a_paths: Sequence[Path], b: str, b_paths: Sequence[Path],
                         out_root: Path = REPORTS_DIR, *, builds: bool = False,
                         name: str | None = None) -> Path:
    """Compare builds `a` and `b` within `a_paths` (builds=True), or runs `a_paths` and `b_paths`."""
    if builds:
        view_b = run_view(a_paths, a)
        comparisons = compare_builds(view_b, a, b)
        title = f"{b} against {a}"
    else:
        view_a, view_b = run_view(a_paths), run_view(b_paths)
        comparisons = compare_runs(view_a, a, view_b, b)
        title = f"{b} against {a}"
    device, model = view_b.doc["device"]["name"], view_b.doc["model"]["name"]
    out = page_dir(out_root, device, name or f"compare-{a}-vs-{b}")
    charts = [(c, _figure(out, f"speedup-{i}.png", plots.speedup_chart(c), f"speedup chart: {c.title}",
                          f"Per-layer speedup of {c.b} over {c.a}: bars from 1, whiskers the 95% CI; "
                          "green/red where the change is significant."))
              for i, c in enumerate(comparisons)]
    page = out / "index.html"
    write_atomic(page, render_compare(title, device, model, [p.name for p in map(Path, a_paths)],
                                      [p.name for p in map(Path, b_paths)], charts, SIGNIFICANCE))
    return page

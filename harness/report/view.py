"""What a report page shows, computed from result documents when the report is made.

No HTML here (html.py renders it) and no plotting (plots.py). Times, GFLOP/s, % of peak and
speedups are recomputed from each layer's raw samples; the derived numbers stored in a result
file are for convenience only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from harness.devices.bandwidth import bandwidth_gb_s
from harness.devices.fma import fma_gflops
from harness.devices.peak_basis import PeakBasis, basis_of, pct_peak_gflops
from harness.errors import UserError
# fast_algorithm moved to algorithms.py (the run's warnings need it too); still importable from here
from harness.report.algorithms import DIRECT_KERNELS, FAST_ALGORITHMS, fast_algorithm  # noqa: F401
from harness.report.speedup import Speedup, speedup
from harness.report.table import rate_unit, run_warnings
from harness.results.store import load_result
from harness.runner.stats import Summary, summarize

DEFAULT_BASELINE = "caffe2-nnpack"
MARKS = 3  # how many layers get the "slowest" and the "most improved" marks, per build


@dataclass
class Source:
    path: Path
    doc: dict[str, Any]

    @property
    def commit(self) -> str | None:
        return self.doc["harness"].get("commit")

    @property
    def created(self) -> str:
        return self.doc["created_utc"]


@dataclass
class BuildRun:
    """One build as recorded in one result file."""
    record: dict[str, Any]
    peak: float  # GFLOP/s (GOP/s for int8) of the peak this build is measured against (fp32, fp16 or int8)
    source: Source
    e2e: Summary | None = None
    speedup: Speedup | None = None  # end-to-end, against the baseline

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def ok(self) -> bool:
        return self.record["status"] == "ok"

    @property
    def unit(self) -> str:
        """GFLOP/s, or GOP/s for an int8 build."""
        return rate_unit(self.record)

    @property
    def samples(self) -> list[float]:
        return (self.record.get("e2e") or {}).get("samples_ms") or []

    @property
    def layers(self) -> dict[str, dict[str, Any]]:
        return {layer["id"]: layer for layer in self.record["layers"]}

    @property
    def e2e_gflops(self) -> float | None:
        return None if self.e2e is None else self.source.doc["model"]["total_flops"] / (self.e2e.median * 1e6)


@dataclass
class Cell:
    """One build's numbers for one layer."""
    median_ms: float
    samples: list[float]
    gflops: float
    pct_peak: float
    impl: str
    algorithm: str | None  # fast algorithm: GFLOP/s are effective
    speedup: Speedup | None = None
    marks: list[str] = field(default_factory=list)

    @property
    def above_peak(self) -> bool:
        return self.pct_peak > 100.0


@dataclass
class LayerRow:
    layer: dict[str, Any]  # the shape-describing fields of the first build that has this layer
    cells: dict[str, Cell]  # build name -> numbers

    @property
    def id(self) -> str:
        return self.layer["id"]

    @property
    def intensity(self) -> float | None:
        """Arithmetic intensity: FLOPs per byte moved."""
        return self.layer["flops"] / self.layer["bytes"] if self.layer["bytes"] else None


@dataclass
class RunView:
    sources: list[Source]  # oldest first
    builds: list[BuildRun]
    baseline: str
    baseline_note: str | None
    rows: list[LayerRow]
    warnings: list[str]
    notes: list[str]

    @property
    def doc(self) -> dict[str, Any]:
        """The newest result file: its device, system and model blocks describe the page."""
        return self.sources[-1].doc

    @property
    def ok_builds(self) -> list[BuildRun]:
        return [b for b in self.builds if b.ok]

    @property
    def bandwidth_gb_s(self) -> float | None:
        return bandwidth_gb_s(self.doc["system"])

    @property
    def peak_basis(self) -> PeakBasis:
        """The peak % of peak is a share of (the newest file's), and its basis."""
        return basis_of(self.doc)

    @property
    def fma_gflops(self) -> dict[str, float | None] | None:
        """The measured all-core FMA throughput (the achievable ceiling), if the file has it."""
        return fma_gflops(self.doc["system"])

    @property
    def above_peak(self) -> list[tuple[str, LayerRow, Cell]]:
        return [(b, row, c) for row in self.rows for b, c in row.cells.items() if c.above_peak]

    @property
    def commits(self) -> list[str]:
        return list(dict.fromkeys(s.commit or "(no commit)" for s in self.sources))


def load_sources(paths: Iterable[Path | str]) -> list[Source]:
    sources = [Source(Path(p), load_result(p)) for p in paths]
    if not sources:
        raise UserError("no result files to report on")
    for key in ("device", "model"):
        names = sorted({s.doc[key]["name"] for s in sources})
        if len(names) > 1:
            raise UserError(f"the result files are for different {key}s ({', '.join(names)}); "
                            f"report on one {key} at a time")
    return sorted(sources, key=lambda s: s.created)


def _build_runs(sources: list[Source]) -> tuple[list[BuildRun], list[str]]:
    """Each build once; where several files have the same build, the newest file's wins."""
    runs: dict[str, BuildRun] = {}
    notes = []
    for src in sources:
        peaks = pct_peak_gflops(src.doc)  # the peak its pct_peak is a share of, with its basis
        for record in src.doc["builds"]:
            if record["name"] in runs:
                notes.append(f"build {record['name']}: {runs[record['name']].source.path.name} is "
                             f"superseded by the newer {src.path.name}")
            run = BuildRun(record, peaks[record.get("peak_dtype") or "fp32"], src)
            if run.samples:
                run.e2e = summarize(run.samples)
            runs[record["name"]] = run
    return list(runs.values()), notes


def _cell(build: BuildRun, layer: dict[str, Any]) -> Cell:
    median = float(np.median(layer["samples_ms"]))
    gflops = layer["flops"] / (median * 1e6) if median > 0 else 0.0
    return Cell(median, layer["samples_ms"], gflops, 100.0 * gflops / build.peak, layer["impl"],
                fast_algorithm(build.name, layer))


def _rows(builds: list[BuildRun]) -> list[LayerRow]:
    rows: dict[str, LayerRow] = {}
    for build in builds:
        for layer in build.record["layers"]:
            row = rows.setdefault(layer["id"], LayerRow(layer, {}))
            row.cells[build.name] = _cell(build, layer)
    return list(rows.values())


def _mark(rows: list[LayerRow], build: str) -> None:
    cells = [row.cells[build] for row in rows if build in row.cells]
    for cell in sorted(cells, key=lambda c: c.median_ms, reverse=True)[:MARKS]:
        cell.marks.append("slowest")
    improved = [c for c in cells if c.speedup is not None and c.speedup.verdict == "faster"]
    for cell in sorted(improved, key=lambda c: c.speedup.ratio, reverse=True)[:MARKS]:
        cell.marks.append("most improved")


def _apply_baseline(builds: list[BuildRun], rows: list[LayerRow], baseline: str) -> str | None:
    """Speedups against the baseline build; a note instead when it cannot be the baseline."""
    base = next((b for b in builds if b.name == baseline), None)
    if base is None:
        return f"the baseline build {baseline} is not in these results: no speedups are shown"
    if not base.ok or base.e2e is None:
        return f"the baseline build {baseline} failed: no speedups are shown"
    for build in builds:
        if build.ok and build.e2e is not None and build.name != baseline:
            build.speedup = speedup(base.samples, build.samples)
    for row in rows:
        ref = row.cells.get(baseline)
        for name, cell in row.cells.items():
            # a layer fused into another's kernel is timed 0: no ratio (it is in its absorber's)
            if ref is not None and name != baseline and cell.median_ms > 0 and ref.median_ms > 0:
                cell.speedup = speedup(ref.samples, cell.samples)
    return None


def run_view(paths: Iterable[Path | str], baseline: str = DEFAULT_BASELINE) -> RunView:
    sources = load_sources(paths)
    builds, notes = _build_runs(sources)
    builds.sort(key=lambda b: b.name != baseline)  # the baseline's columns first; stable otherwise
    rows = _rows([b for b in builds if b.ok])
    baseline_note = _apply_baseline(builds, rows, baseline)
    for build in builds:
        if build.ok:
            _mark(rows, build.name)
    warnings = [f"{s.path.name}: {w}" if len(sources) > 1 else w
                for s in sources for w in run_warnings(s.doc)]
    return RunView(sources, builds, baseline, baseline_note, rows, warnings, notes)

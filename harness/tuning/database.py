"""Tuning databases: per device and per kind, one JSON file under tuning/<device>/.

A record per workload (layers computing the same function share one) holds every candidate
measured, with its raw samples or its failure, so a search can resume where it stopped and a
reader can see why the winner won. Kinds:
- `tvm-conv2d`: template parameters of the `tvm` build's direct convolution;
- `fp16-winograd`: template parameters of the `fp16-winograd` build's kernels;
- `tvm-nnpack`: the hybrid's choice table, candidates being `tvm` or `nnpack:<algo>/<strategy>`.
The winner is the candidate with the lowest minimum sample: on a shared machine the minimum
is the estimate least disturbed by other work; medians are still stored and reported.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.timestamps import utc_now
from harness.fileio import write_atomic
from harness.userfiles import read_user_text

FORMAT = 1
TUNING_DIR = Path(__file__).resolve().parents[2] / "tuning"
KINDS = ("tvm-conv2d", "fp16-winograd", "tvm-nnpack")


@dataclass
class Candidate:
    params: dict[str, Any]
    samples_ms: list[float] | None = None  # raw per-repeat times; None if it failed
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.samples_ms is not None and self.error is None

    @property
    def key(self) -> str:
        return json.dumps(self.params, sort_keys=True)


@dataclass
class Record:
    workload: str
    layer: str  # the first layer id with this workload, for people reading the file
    space_size: int
    candidates: list[Candidate] = field(default_factory=list)
    updated_utc: str = ""

    def measured(self) -> set[str]:
        return {c.key for c in self.candidates}

    def best(self) -> Candidate | None:
        ok = [c for c in self.candidates if c.ok]
        return min(ok, key=lambda c: min(c.samples_ms)) if ok else None  # type: ignore[arg-type]

    def best_median_ms(self) -> float | None:
        best = self.best()
        return statistics.median(best.samples_ms) if best else None  # type: ignore[arg-type]


@dataclass
class TuningDatabase:
    path: Path
    kind: str
    device: str
    target: dict[str, Any]
    records: dict[str, Record] = field(default_factory=dict)

    def best_params(self, workload: str) -> dict[str, Any] | None:
        record = self.records.get(workload)
        best = record.best() if record else None
        return best.params if best else None

    def save(self) -> None:
        doc = {"format": FORMAT, "kind": self.kind, "device": self.device, "target": self.target,
               "records": {k: asdict(r) for k, r in sorted(self.records.items())}}
        write_atomic(self.path, json.dumps(doc, indent=1) + "\n")

    def add(self, workload: str, layer: str, space_size: int, candidate: Candidate) -> None:
        record = self.records.setdefault(workload, Record(workload, layer, space_size))
        record.space_size = space_size
        record.candidates = [c for c in record.candidates if c.key != candidate.key] + [candidate]
        record.updated_utc = utc_now()


def database_path(device: str, kind: str, root: Path = TUNING_DIR) -> Path:
    return root / device / f"{kind}.json"


def load_database(device: str, kind: str, target: dict[str, Any], root: Path = TUNING_DIR) -> TuningDatabase:
    """The device's database of this kind; empty if there is none yet."""
    path = database_path(device, kind, root)
    if not path.exists():
        return TuningDatabase(path, kind, device, target)
    text = read_user_text(path, "tuning database")
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT or doc.get("kind") != kind:
            raise ValueError(f"format {doc.get('format')!r} kind {doc.get('kind')!r}, expected {FORMAT} {kind}")
        records = {
            key: Record(r["workload"], r["layer"], r["space_size"],
                        [Candidate(**c) for c in r["candidates"]], r.get("updated_utc", ""))
            for key, r in doc["records"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise UserError(f"{path}: unreadable tuning database ({exc}); move it away to re-tune") from None
    return TuningDatabase(path, kind, device, doc.get("target", target), records)

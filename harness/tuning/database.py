"""Tuning databases: per device, per CPU and per kind, tuning/<device>/<cpu-key>/<kind>.json.

The CPU key (harness/tuning/cpukey.py, e.g. `znver3-avx2`) keeps databases of the different
CPUs one device name can stand for (the CI machine changes between Zen 3, Zen 5 and a Xeon)
side by side. `harness tune` writes into the current CPU's own (load_database); a build
applies resolve_database's choice: this CPU's own database; else one in the old per-device
layout (tuning/<device>/<kind>.json) if it was made on this LLVM cpu, with a line saying where
to move it; else another CPU's with the same vector lanes (cpukey.closest_key); else none, the
templates' untuned defaults. The result records which (Resolution.record) and one line saying
so (Resolution.note); the fingerprint hashes the database actually applied.

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

from harness.devices.config import Device
from harness.errors import UserError
from harness.fileio import write_atomic
from harness.results.fingerprint import short_hash
from harness.timestamps import utc_now
from harness.tuning.cpukey import CpuKey, closest_key, cpu_key, parse_key
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

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)  # type: ignore[arg-type]


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
        return best.median_ms if best else None


@dataclass
class TuningDatabase:
    path: Path
    kind: str
    device: str
    target: dict[str, Any]
    records: dict[str, Record] = field(default_factory=dict)
    sha256: str | None = None  # of the file as read (16 hex digits); None: not on disk

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


def keyed_path(device: str, key: CpuKey, kind: str, root: Path = TUNING_DIR) -> Path:
    """tuning/<device>/<cpu-key>/<kind>.json"""
    return root / device / key.name / f"{kind}.json"


def database_path(device: Device, kind: str, root: Path = TUNING_DIR) -> Path:
    """Where the device's current CPU keeps its database of `kind`."""
    return keyed_path(device.name, cpu_key(device), kind, root)


def old_layout_path(device: str, kind: str, root: Path = TUNING_DIR) -> Path:
    """Where databases were before they were kept per CPU: one per device."""
    return root / device / f"{kind}.json"


def read_database(path: Path, kind: str, device: str, target: dict[str, Any]) -> TuningDatabase:
    """The database in `path`; empty (for `target`) if there is none yet."""
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
    return TuningDatabase(path, kind, device, doc.get("target", target), records, short_hash(text.encode()))


def load_database(device: Device, kind: str, target: dict[str, Any], root: Path = TUNING_DIR) -> TuningDatabase:
    """The current CPU's own database of this kind (what `harness tune` extends); empty if none."""
    return read_database(database_path(device, kind, root), kind, device.name, target)


OWN, OLD_LAYOUT, STAND_IN, NONE = "own", "old-layout", "stand-in", "none"


@dataclass(frozen=True)
class Resolution:
    """The database a build applies for one kind, and how it was found (resolve_database)."""

    db: TuningDatabase  # empty for NONE
    key: CpuKey  # the current CPU's
    source: str  # OWN, OLD_LAYOUT, STAND_IN or NONE
    note: str  # the one line the result's notes carry

    def record(self, root: Path) -> dict[str, Any]:
        """What the result's build records under `tuning`: the fingerprint hashes `database`."""
        database = self.db.path.relative_to(root).as_posix() if self.source != NONE else None
        return {"kind": self.db.kind, "cpu_key": self.key.name, "source": self.source,
                "database": database, "sha256": self.db.sha256}


def stored_keys(device: str, kind: str, root: Path) -> list[CpuKey]:
    """The CPUs with a database of `kind` under tuning/<device>/."""
    folder = root / device
    found = [parse_key(p.parent.name) for p in sorted(folder.glob(f"*/{kind}.json"))] if folder.is_dir() else []
    return [k for k in found if k is not None]


def resolve_database(device: Device, kind: str, target: dict[str, Any], root: Path = TUNING_DIR) -> Resolution:
    """The database a build on `device` applies for `kind` (module docstring: own, old
    layout, stand-in, none)."""
    key = cpu_key(device)
    own = keyed_path(device.name, key, kind, root)
    if own.exists():
        db = read_database(own, kind, device.name, target)
        return Resolution(db, key, OWN, f"{kind} tuning database: {_shown(own, root)} (this CPU's)")
    old = read_database(old_layout_path(device.name, kind, root), kind, device.name, target)
    if old.sha256 is not None and old.target.get("mcpu") == key.cpu:
        return Resolution(old, key, OLD_LAYOUT, f"{kind} tuning database {_shown(old.path, root)} is in the "
                          f"old per-device layout: move it to {_shown(own, root)} (mkdir -p, then git mv)")
    # An old-layout database made on another cpu is not used: the vector width it was tuned
    # for is not recorded, and the cpu alone does not give it for every machine.
    aside = (f"; {_shown(old.path, root)} (old layout, tuned on {old.target.get('mcpu')}) is not used: move it "
             f"to {root.name}/{device.name}/<its CPU's key>/" if old.sha256 is not None else "")
    stored = stored_keys(device.name, kind, root)
    stand_in = closest_key(key, stored, kind)
    if stand_in is not None:
        path = keyed_path(device.name, stand_in, kind, root)
        return Resolution(read_database(path, kind, device.name, target), key, STAND_IN,
                          f"no {kind} tuning database for this CPU ({key.name}): using {_shown(path, root)}, "
                          f"tuned on {stand_in.name} for the same {key.lanes(kind)}-lane vectors{aside}; "
                          f"run `harness tune --device {device.name}` for this CPU's own")
    others = f" ({root.name}/{device.name} has {', '.join(k.name for k in stored)})" if stored else ""
    return Resolution(TuningDatabase(own, kind, device.name, target), key, NONE,
                      f"no {kind} tuning database for this CPU ({key.name}) nor one for its {key.lanes(kind)}-lane "
                      f"vectors{others}: untuned template defaults{aside}; run `harness tune --device {device.name}`")


def _shown(path: Path, root: Path) -> str:
    """A database's path as notes show it, from the tuning folder (tuning/local/...)."""
    return (Path(root.name) / path.relative_to(root)).as_posix()

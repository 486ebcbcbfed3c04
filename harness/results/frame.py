"""pandas views of result files: one tidy row per run x build x layer (or x build for e2e)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from harness.devices.state import run_busy
from harness.results.store import load_result


def _run_columns(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    fingerprint, system = doc["fingerprint"], doc.get("system") or {}
    return {"file": str(path), "created_utc": doc["created_utc"], "commit": doc["harness"].get("commit"),
            "device": doc["device"]["name"], "model": doc["model"]["name"],
            "hardware_hash": fingerprint["hardware_hash"], "hardware": fingerprint["hardware"],
            "software": fingerprint["software"], "complete": doc["complete"],
            # the measurement session it belongs to (harness.runs' run group; alone: the run itself)
            "session": (doc.get("run_group") or {}).get("id") or str(path),
            # other processes held the CPUs while it ran (harness.devices.state.BUSY_SHARE)
            "busy": run_busy(system.get("before") or {}, system.get("after"))}


def _frame(paths: Iterable[Path | str],
           build_rows: Callable[[dict[str, Any], dict[str, Any]], list[dict[str, Any]]]) -> pd.DataFrame:
    """Rows from every build of every file; build_rows(run columns, build record) makes them."""
    rows = []
    for path in map(Path, paths):
        doc = load_result(path)
        run = _run_columns(doc, path)
        for build in doc["builds"]:
            rows += build_rows(run, build)
    return pd.DataFrame(rows)


def _layer_rows(run: dict[str, Any], build: dict[str, Any]) -> list[dict[str, Any]]:
    base = {**run, "build": build["name"], "status": build["status"]}
    return [{**base, **{("layer" if k == "id" else k): v for k, v in layer.items()}} for layer in build["layers"]]


def _e2e_rows(run: dict[str, Any], build: dict[str, Any]) -> list[dict[str, Any]]:
    e2e = build.get("e2e") or {}
    return [{**run, "build": build["name"], "status": build["status"], "message": build.get("message"),
             "median_ms": e2e.get("median_ms"), "samples_ms": e2e.get("samples_ms"),
             "max_rel_error": build.get("max_rel_error")}]


def layers_frame(paths: Iterable[Path | str]) -> pd.DataFrame:
    """One row per run x build x layer."""
    return _frame(paths, _layer_rows)


def e2e_frame(paths: Iterable[Path | str]) -> pd.DataFrame:
    """One row per run x build: the end-to-end samples and the build's status."""
    return _frame(paths, _e2e_rows)

"""pandas views of result files: one tidy row per run x build x layer (or x build for e2e)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from harness.results.store import load_result


def _run_columns(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    return {"file": str(path), "created_utc": doc["created_utc"], "commit": doc["harness"].get("commit"),
            "device": doc["device"]["name"], "model": doc["model"]["name"]}


def layers_frame(paths: Iterable[Path | str]) -> pd.DataFrame:
    rows = []
    for path in map(Path, paths):
        doc = load_result(path)
        run = _run_columns(doc, path)
        for build in doc["builds"]:
            base = {**run, "build": build["name"], "status": build["status"]}
            for layer in build["layers"]:
                rows.append({**base, **{("layer" if k == "id" else k): v for k, v in layer.items()}})
    return pd.DataFrame(rows)


def e2e_frame(paths: Iterable[Path | str]) -> pd.DataFrame:
    rows = []
    for path in map(Path, paths):
        doc = load_result(path)
        run = _run_columns(doc, path)
        for build in doc["builds"]:
            e2e = build.get("e2e") or {}
            rows.append({**run, "build": build["name"], "status": build["status"],
                         "message": build.get("message"), "median_ms": e2e.get("median_ms"),
                         "samples_ms": e2e.get("samples_ms"), "max_rel_error": build.get("max_rel_error")})
    return pd.DataFrame(rows)

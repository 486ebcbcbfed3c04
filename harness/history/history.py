"""The per-layer history of one device and model: every stored run, oldest first."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.results.frame import layers_frame
from harness.results.store import RESULTS_DIR, RUNS_SUBDIR, find_results

# The columns callers rely on, present even when there is no history yet.
COLUMNS = ["file", "created_utc", "commit", "device", "model", "build", "status", "layer",
           "median_ms", "samples_ms"]


def load_history(device: str, model: str, results_root: Path = RESULTS_DIR) -> pd.DataFrame:
    """One row per run x build x layer of `device` and `model`, ordered oldest first.

    A run made outside a git checkout has no commit; it is keyed by its file instead, so that
    it stays a point of its own in the history rather than merging with other such runs.
    """
    paths = [p for p in find_results(Path(results_root)) if p.parent.name == device]
    frame = layers_frame(paths) if paths else pd.DataFrame(columns=COLUMNS)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    frame = frame[(frame["model"] == model) & (frame["device"] == device)]
    frame = frame.assign(commit=frame["commit"].fillna(frame["file"]))
    return frame.sort_values("created_utc", kind="stable").reset_index(drop=True)


def per_commit(history: pd.DataFrame) -> pd.DataFrame:
    """One row per build x layer x commit, commits in the order they first ran, with the raw
    samples of every run of that commit pooled (runs of one commit measure the same code)."""
    if history.empty:
        return pd.DataFrame(columns=["build", "layer", "commit", "created_utc", "samples_ms", "median_ms"])
    ok = history[history["status"] == "ok"]
    rows = []
    for (build, layer, commit), group in ok.groupby(["build", "layer", "commit"], sort=False):
        samples = [s for run in group["samples_ms"] for s in run]
        rows.append({"build": build, "layer": layer, "commit": commit,
                     "created_utc": group["created_utc"].iloc[0], "samples_ms": samples,
                     "median_ms": float(pd.Series(samples).median())})
    frame = pd.DataFrame(rows)
    return frame.sort_values("created_utc", kind="stable").reset_index(drop=True)


def history_dir(device: str, results_root: Path = RESULTS_DIR) -> Path:
    return Path(results_root) / RUNS_SUBDIR / device

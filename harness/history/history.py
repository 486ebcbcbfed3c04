"""The per-layer history of one device and model: every stored run, in commit order."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.history.ancestry import topological
from harness.results.frame import layers_frame
from harness.results.store import RESULTS_DIR, RUNS_SUBDIR, find_results

# The columns callers rely on, present even when there is no history yet.
COLUMNS = ["file", "created_utc", "commit", "device", "model", "hardware_hash", "build", "status",
           "layer", "median_ms", "samples_ms"]
POINT_COLUMNS = ["build", "layer", "hardware_hash", "commit", "created_utc", "samples_ms",
                 "median_ms", "run_medians_ms"]


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
    frame = frame.sort_values("created_utc", kind="stable").reset_index(drop=True)
    return in_commit_order(frame)


def in_commit_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by commit ancestry (ancestors first), runs of one commit by time; by time
    alone when git does not know every commit (see harness.history.ancestry)."""
    order = topological(list(dict.fromkeys(frame["commit"])))
    if not order:
        return frame
    rank = {sha: i for i, sha in enumerate(order)}
    keyed = frame.assign(_rank=frame["commit"].map(rank))
    return keyed.sort_values(["_rank", "created_utc"], kind="stable").drop(columns="_rank").reset_index(drop=True)


def per_commit(history: pd.DataFrame) -> pd.DataFrame:
    """One row per build x layer x machine x commit, commits in the order they first ran (or
    the history's own order), with each run's median kept apart (run_medians_ms: the unit
    harness.history.verdict judges) and the raw samples of all runs pooled (for plots)."""
    if history.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    ok = history[history["status"] == "ok"]
    if "hardware_hash" not in ok:  # synthetic histories (tests) name no machine
        ok = ok.assign(hardware_hash="unknown")
    rows = []
    for (build, layer, machine, commit), group in ok.groupby(["build", "layer", "hardware_hash", "commit"],
                                                             sort=False):
        samples = [s for run in group["samples_ms"] for s in run]
        rows.append({"build": build, "layer": layer, "hardware_hash": machine, "commit": commit,
                     "created_utc": group["created_utc"].iloc[0], "samples_ms": samples,
                     "median_ms": float(pd.Series(samples).median()),
                     "run_medians_ms": [float(pd.Series(run).median()) for run in group["samples_ms"]]})
    return pd.DataFrame(rows)


def history_dir(device: str, results_root: Path = RESULTS_DIR) -> Path:
    return Path(results_root) / RUNS_SUBDIR / device

"""The per-layer history behind a report's history plot, and the regressions marked on it.

Both come from harness.history (the nightly's own history and step detection), so the page
marks exactly the regressions `harness regressions` lists.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from harness.history import Regression, detect_regressions, load_history
from harness.results.frame import layers_frame


def history_runs(device: str, model: str, results_root: Path, extra: Sequence[Path] = (),
                 commits: Sequence[str] | None = None) -> pd.DataFrame:
    """Every stored run of `device` and `model`, plus `extra` result files kept elsewhere,
    limited to `commits` (full hashes) when given; one row per run x build x layer."""
    stored = load_history(device, model, results_root)
    known = set(stored["file"].map(lambda f: str(Path(f).resolve())))
    others = [p for p in extra if str(Path(p).resolve()) not in known]
    frame = stored
    more = layers_frame(others) if others else pd.DataFrame()
    if not more.empty:  # empty (no columns at all) when those runs have no layers
        more = more.assign(commit=more["commit"].fillna(more["file"]))
        frame = pd.concat([stored, more], ignore_index=True) if not stored.empty else more
    if commits is not None:
        frame = frame[frame["commit"].isin(list(commits))]
    # Only successful builds have a history (and per_commit needs at least one such row).
    frame = frame[frame["status"] == "ok"] if not frame.empty else frame
    return frame.sort_values("created_utc", kind="stable").reset_index(drop=True)


def regression_marks(runs: pd.DataFrame) -> list[Regression]:
    """The open regressions to mark on the history plot."""
    return detect_regressions(runs) if not runs.empty else []

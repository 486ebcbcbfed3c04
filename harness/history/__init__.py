"""Per-layer history across commits, step detection over it, and two-sample comparison.

API (what `harness nightly`, `harness compare`, `harness regressions` and the HTML report use):

    from harness.history import load_history, detect_regressions, compare_samples, Regression

    load_history(device: str, model: str, results_root: Path = RESULTS_DIR) -> pandas.DataFrame
        One row per run x build x layer, from results/runs/<device>/*.json, oldest first.
        Columns: file, created_utc, commit, device, model, build, status, layer, median_ms,
        samples_ms (list of raw ms), flops, gflops, pct_peak, impl, ... (layers_frame's columns).
        Failed builds carry no layer rows. Empty frame (same columns) when there is no history.

    detect_regressions(history, threshold=0.05, alpha=0.01) -> list[Regression]
        Open regressions per build x layer over the whole history: asv's own step detection
        (asv.step_detect, Potts model with a BIC penalty) on per-commit medians, kept only when
        the step is at least `threshold` (relative) and a Mann-Whitney U test on the raw samples
        of the segments either side of the step gives p < alpha.

    Regression(build, layer, commit, before_ms, after_ms, ratio, p_value)   (dataclass)
        commit is the first commit after the step; ratio = after_ms / before_ms (> 1 is slower).

    compare_samples(before_ms, after_ms, threshold=0.05, alpha=0.01) -> Change
        Change(before_ms, after_ms, ratio, p_value, verdict) where verdict is "slower",
        "faster" or "same": "slower"/"faster" need |ratio - 1| >= threshold AND p < alpha.
"""
from __future__ import annotations

import importlib
from typing import Any

# Imported on first use (PEP 562): asv, scipy and pandas are slow to import, and the CLI
# imports this package's argument parsers for every command.
_EXPORTS = {"Change": "detect", "Regression": "detect", "compare_samples": "detect",
            "detect_regressions": "detect", "load_history": "history", "per_commit": "history"}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"harness.history.{_EXPORTS[name]}"), name)


__all__ = ["Change", "Regression", "compare_samples", "detect_regressions", "load_history",
           "per_commit"]

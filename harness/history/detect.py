"""Is a layer slower? Two-sample comparison, and step detection over a whole history.

compare_samples: the one significance test, used by `harness compare` and `harness nightly`:
a two-sided Mann-Whitney U test on the raw samples (no normality assumed; timing noise is
skewed) plus a minimum relative change, so a significant but negligible shift is not flagged.
With n samples on each side the smallest attainable p is 2 / C(2n, n): n >= 6 is needed to
reach alpha = 0.01, so runs with fewer repeats can never be flagged (by design, not by luck).

detect_regressions: asv's own step detection (asv.step_detect.detect_steps: a piecewise-
constant Potts fit whose penalty is chosen by a BIC-like criterion, the same code behind asv's
published regressions page) on per-commit medians, then asv.step_detect.detect_regressions to keep the
upward steps that are still open at the latest commit. Each candidate step is then confirmed
by compare_samples between the raw samples of the segment before and the segment after it.
False alarms: with no step in the data, a regression needs the Potts fit to place a step AND
the test to reject at `alpha`, so the rate per build x layer is at most `alpha` per candidate
step (the test is done once per candidate); tests/test_history_detect.py measures it on
seeded pure noise (0 alarms in 200 series of 20 commits at alpha = 0.01).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd
from asv import step_detect
from scipy.stats import mannwhitneyu

from harness.history.history import per_commit

Verdict = Literal["slower", "faster", "same"]


@dataclass(frozen=True)
class Change:
    before_ms: float
    after_ms: float
    ratio: float  # after / before: > 1 is slower
    p_value: float
    verdict: Verdict


@dataclass(frozen=True)
class Regression:
    build: str
    layer: str
    commit: str  # the first commit measured after the step
    before_ms: float
    after_ms: float
    ratio: float
    p_value: float


def compare_samples(before_ms: Sequence[float], after_ms: Sequence[float], threshold: float = 0.05,
                    alpha: float = 0.01) -> Change:
    """Median change from `before_ms` to `after_ms` and whether it is significant."""
    before, after = np.asarray(before_ms, float), np.asarray(after_ms, float)
    if before.size == 0 or after.size == 0:
        raise ValueError("compare_samples needs at least one sample on each side")
    b, a = float(np.median(before)), float(np.median(after))
    ratio = a / b if b > 0 else math.inf
    p = 1.0
    if before.size >= 2 and after.size >= 2 and not (np.ptp(np.concatenate([before, after])) == 0):
        p = float(mannwhitneyu(before, after, alternative="two-sided").pvalue)
    verdict: Verdict = "same"
    if p < alpha and abs(ratio - 1) >= threshold:
        verdict = "slower" if ratio > 1 else "faster"
    return Change(b, a, ratio, p, verdict)


def _segment(steps: list[tuple], pos: int) -> tuple[int, int]:
    """(left, right) of the fitted segment holding point `pos`."""
    for left, right, *_ in steps:
        if left <= pos < right:
            return left, right
    raise ValueError(f"no segment holds point {pos}")


def _series_regressions(points: pd.DataFrame, threshold: float, alpha: float) -> list[Regression]:
    medians = list(points["median_ms"])
    # Unweighted: asv's CI-width weights, from the ~10 samples of one run, vary so much between
    # commits that the fit collapses real staircases into one segment (seen on seeded data).
    steps = step_detect.detect_steps(medians)
    _, _, positions = step_detect.detect_regressions(steps, threshold=threshold)
    found = []
    for before_pos, after_pos, _, _ in positions or []:
        lo, _ = _segment(steps, before_pos)
        _, hi = _segment(steps, after_pos)
        before = [s for run in points["samples_ms"].iloc[lo:before_pos + 1] for s in run]
        after = [s for run in points["samples_ms"].iloc[after_pos:hi] for s in run]
        change = compare_samples(before, after, threshold, alpha)
        if change.verdict == "slower":
            found.append(Regression(points["build"].iloc[0], points["layer"].iloc[0],
                                    points["commit"].iloc[after_pos], change.before_ms,
                                    change.after_ms, change.ratio, change.p_value))
    return found


def detect_regressions(history: pd.DataFrame, threshold: float = 0.05,
                       alpha: float = 0.01) -> list[Regression]:
    """Open regressions per build x layer over the whole history (see the module docstring)."""
    found: list[Regression] = []
    for _, points in per_commit(history).groupby(["build", "layer"], sort=False):
        if len(points) >= 2:
            found.extend(_series_regressions(points.reset_index(drop=True), threshold, alpha))
    return found

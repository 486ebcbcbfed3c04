"""Is a layer slower? Step detection over a whole history, and the old sample-level test.

detect_regressions: asv's own step detection (asv.step_detect.detect_steps: a piecewise-
constant Potts fit whose penalty is chosen by a BIC-like criterion, the same code behind asv's
published regressions page) on per-commit medians, then asv.step_detect.detect_regressions to
keep the upward steps that are still open at the latest commit. Each candidate step is then
confirmed by harness.history.verdict.judge on the RUN medians of the segment before and the
segment after it, with the between-run and between-commit noise of the series itself: the
same run-level rule as `harness compare` and `harness nightly`. Each machine (hardware
fingerprint) is a series of its own.

compare_samples: a Mann-Whitney U test on raw samples. It treats the samples of one run as
independent, which they are not (issue 10: it flagged identical code in 4 of 4 pairs of runs),
so no verdict uses it any more; the report's within-run build comparison still shows it.
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
from harness.history.verdict import RunChange, estimate_noise, judge

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
    ci_low: float = math.nan  # 95 % bootstrap interval of the ratio, over run medians
    ci_high: float = math.nan
    band: float = math.nan  # the noise band the change cleared (relative)

    @classmethod
    def of(cls, build: str, layer: str, commit: str, change: RunChange) -> "Regression":
        return cls(build, layer, commit, change.before_ms, change.after_ms, change.ratio,
                   change.p_value, change.ci_low, change.ci_high, change.band)


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


def _runs(points: pd.DataFrame, lo: int, hi: int) -> list[np.ndarray]:
    """Run medians of the commits lo..hi-1, one array per commit."""
    return [np.asarray(r, float) for r in points["run_medians_ms"].iloc[lo:hi]]


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
        # The run is the unit (harness.history.verdict); the segment before the step is also
        # the lookback the session noise is estimated from.
        before_commits, after_commits = _runs(points, lo, before_pos + 1), _runs(points, after_pos, hi)
        before, after = np.concatenate(before_commits), np.concatenate(after_commits)
        noise = estimate_noise([*before_commits, *after_commits])
        change = judge(before, after, noise, threshold, alpha,
                       sessions=(len(before_commits), len(after_commits)))
        if change.verdict == "slower":
            found.append(Regression.of(points["build"].iloc[0], points["layer"].iloc[0],
                                       points["commit"].iloc[after_pos], change))
    return found


def detect_regressions(history: pd.DataFrame, threshold: float = 0.05,
                       alpha: float = 0.01) -> list[Regression]:
    """Open regressions per build x layer x machine over the whole history (module docstring).
    A machine's series is its own: results of another fingerprint never join it."""
    found: list[Regression] = []
    for _, points in per_commit(history).groupby(["build", "layer", "hardware_hash"], sort=False):
        if len(points) >= 2:
            found.extend(_series_regressions(points.reset_index(drop=True), threshold, alpha))
    return found

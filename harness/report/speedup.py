"""Speedups with confidence intervals, computed from raw samples when a report is made.

speedup = median(baseline samples) / median(candidate samples), so > 1 means the candidate is
faster. The interval is a percentile bootstrap: each side's samples are resampled with
replacement, independently, RESAMPLES times with a fixed seed (so a report is reproducible),
and the ratio of the resampled medians gives the distribution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
METHOD = (f"ratio of medians (baseline / build; > 1 is faster), {LEVEL:.0%} percentile bootstrap "
          f"CI over the raw samples ({RESAMPLES} resamples of each side independently, seed {SEED})")


@dataclass(frozen=True)
class Speedup:
    ratio: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """'faster' or 'slower' when the whole interval is on one side of 1, else 'same'."""
        if self.low > 1.0:
            return "faster"
        if self.high < 1.0:
            return "slower"
        return "same"


def _resampled_medians(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    picks = rng.integers(0, samples.size, size=(RESAMPLES, samples.size))
    return np.median(samples[picks], axis=1)


def speedup(baseline: Sequence[float], candidate: Sequence[float]) -> Speedup:
    base = np.asarray(baseline, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    if base.size == 0 or cand.size == 0:
        raise ValueError("speedup needs samples on both sides")
    rng = np.random.default_rng(SEED)
    ratios = _resampled_medians(base, rng) / np.maximum(_resampled_medians(cand, rng), 1e-300)
    tail = (1.0 - LEVEL) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Speedup(float(np.median(base) / max(float(np.median(cand)), 1e-300)), float(low), float(high))

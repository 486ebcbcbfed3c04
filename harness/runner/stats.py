"""Statistics computed from raw samples when they are read; never stored in their place."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

# Noisy when the interquartile range exceeds 10% of the median. pyperf's rule (standard
# deviation over 10% of the mean) fits means; harness results report medians, and with ~10
# samples one preempted run on a shared machine pushed nearly every layer's std past 10%
# while its median did not move. The IQR ignores that one sample and still catches spread.
NOISY_SPREAD = 0.10
MIN_SAMPLES = 5


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    mean: float
    stdev: float
    q1: float
    q3: float

    @property
    def cv(self) -> float:
        return self.stdev / self.mean if self.mean else 0.0

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median."""
        return (self.q3 - self.q1) / self.median if self.median else 0.0

    @property
    def noisy(self) -> bool:
        return self.n < MIN_SAMPLES or self.spread > NOISY_SPREAD


def summarize(samples: list[float]) -> Summary:
    if not samples:
        raise ValueError("no samples")
    qs = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return Summary(len(samples), statistics.median(samples), statistics.fmean(samples),
                   statistics.stdev(samples) if len(samples) > 1 else 0.0, qs[0], qs[2])


def noise_warning(what: str, samples: list[float]) -> str | None:
    s = summarize(samples)
    if s.n < MIN_SAMPLES:
        return f"{what}: only {s.n} samples; use --repeats {MIN_SAMPLES} or more"
    if s.spread > NOISY_SPREAD:
        return f"{what}: noisy, the interquartile range is {s.spread:.0%} of the median over {s.n} samples"
    return None

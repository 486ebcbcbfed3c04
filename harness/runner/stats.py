"""Statistics computed from raw samples when they are read; never stored in their place."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

NOISY_CV = 0.10  # pyperf's rule: a standard deviation above 10% of the mean is noisy
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
    def noisy(self) -> bool:
        return self.n < MIN_SAMPLES or self.cv > NOISY_CV


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
    if s.cv > NOISY_CV:
        return f"{what}: noisy, standard deviation is {s.cv:.0%} of the mean over {s.n} samples"
    return None

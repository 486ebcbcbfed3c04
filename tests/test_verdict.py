"""The run-level verdict (harness.history.verdict) on seeded data that shifts whole runs and
whole sessions against each other, as real machines do (issue 10), not only single samples."""
from __future__ import annotations

import numpy as np
import pytest

from harness.history.verdict import Noise, bootstrap_ratio, estimate_noise, judge


def session(rng: np.random.Generator, level: float, runs: int = 3, n: int = 10, run_shift: float = 0.03,
            session_shift: float = 0.05, sample_noise: float = 0.03) -> np.ndarray:
    """Run medians of one session: a session offset, a per-run offset, skewed sample noise."""
    offset = rng.normal(0, session_shift)
    return np.array([np.median(level * np.exp(offset + rng.normal(0, run_shift))
                               * (1 + rng.exponential(sample_noise, n))) for _ in range(runs)])


def history(rng: np.random.Generator, commits: int, **shifts) -> list[np.ndarray]:
    return [session(rng, 1.0, **shifts) for _ in range(commits)]


def nightly(rng: np.random.Generator, effect: float, commits: int = 8, **shifts):
    past = history(rng, commits, **shifts)
    before, after = past[-1], session(rng, 1.0 + effect, **shifts)
    return judge(before, after, estimate_noise(past[:-1], [before, after]))


def test_identical_code_rarely_alarms_under_run_and_session_shifts():
    rng = np.random.default_rng(10)
    verdicts = [nightly(rng, 0.0).verdict for _ in range(300)]
    # alpha = 0.01 two-sided: ~1.5 slower verdicts expected in 300; 6 would mean the band is wrong
    assert verdicts.count("slower") <= 6


def test_a_sample_level_test_would_alarm_on_the_same_data():
    """The data above is hard: a per-sample rank test flags most pairs (so the test above can fail)."""
    from harness.history.detect import compare_samples  # noqa: PLC0415

    rng = np.random.default_rng(11)
    flagged = 0
    for _ in range(50):
        a = [x for _ in range(3) for x in np.exp(rng.normal(0, 0.05)) * (1 + rng.exponential(0.03, 30))]
        b = [x for _ in range(3) for x in np.exp(rng.normal(0, 0.05)) * (1 + rng.exponential(0.03, 30))]
        flagged += compare_samples(a, b).verdict != "same"
    assert flagged >= 10  # 15 of 50 with this seed; the run-level rule: 2 % at most


def test_a_large_slowdown_is_caught_every_time():
    rng = np.random.default_rng(12)
    assert all(nightly(rng, 1.0).verdict == "slower" for _ in range(50))


def test_a_speedup_is_faster_not_slower():
    rng = np.random.default_rng(13)
    assert all(nightly(rng, -0.5).verdict == "faster" for _ in range(20))


def test_a_layer_whose_history_moves_10_percent_cannot_alarm_at_6():
    rng = np.random.default_rng(14)
    # session sd 7 %: unchanged code moves by about +-10 % from one nightly to the next
    noisy = [nightly(rng, 0.06, commits=15, session_shift=0.07) for _ in range(100)]
    assert min(c.band for c in noisy) > 0.06  # its noise band is wider than the change
    # only when that nightly's own shift adds ~2 sd to the 6 % (6 of 100 with this seed)
    assert sum(c.verdict == "slower" for c in noisy) <= 10
    # a steady layer's band is far narrower (the priors, 3 % with 2 degrees of freedom, keep
    # it from collapsing on a short history), and there a 15 % slowdown is caught
    quiet = [nightly(rng, 0.15, commits=15, session_shift=0.005, run_shift=0.005) for _ in range(20)]
    assert np.median([c.band for c in quiet]) < np.median([c.band for c in noisy]) / 2
    assert sum(c.verdict == "slower" for c in quiet) >= 19


def test_the_report_carries_effect_ci_and_band():
    before, after = np.array([1.0, 1.02, 0.99]), np.array([1.5, 1.52, 1.49])
    change = judge(before, after, Noise.prior())
    assert change.ratio == pytest.approx(1.5, rel=0.01)
    assert change.ci_low <= change.ratio <= change.ci_high
    assert change.ci_low > 1.4 and change.ci_high < 1.6
    assert change.runs_before == change.runs_after == 3
    assert bootstrap_ratio(before, after) == bootstrap_ratio(before, after)  # fixed seed


def test_two_builds_of_one_session_carry_no_session_noise():
    before, after = np.array([1.0, 1.01, 0.99]), np.array([1.08, 1.09, 1.07])
    assert judge(before, after, Noise.prior(), same_session=True).band < \
        judge(before, after, Noise.prior()).band


def test_one_run_a_side_without_history_needs_a_big_change():
    one, two = np.array([1.0]), np.array([1.2])
    assert judge(one, two, estimate_noise([], [one, two])).verdict == "same"
    assert judge(one, np.array([2.07]), estimate_noise([], [one, two])).verdict == "slower"

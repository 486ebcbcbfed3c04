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


# --- frame level: each layer judged beyond its run's common shift (harness.history.judging) ---

LAYERS = [f"layer{i}" for i in range(20)]


def _runs(rng: np.random.Generator, label: str, runs: int, slow: dict[str, float] | None = None,
          run_shift: float = 0.15, layer_noise: float = 0.01) -> "pd.DataFrame":
    """Rows of `runs` runs of one commit: every layer of a run shares that run's shift (a VM
    whose clock or neighbours move), on top of small layer noise; `slow` slows layers."""
    import pandas as pd  # noqa: PLC0415

    rows = []
    for i in range(runs):
        shift = np.exp(rng.normal(0, run_shift))
        for j, layer in enumerate(LAYERS):
            ms = (1 + j) * shift * (1 + (slow or {}).get(layer, 0.0))
            samples = list(ms * np.exp(rng.normal(0, layer_noise, 10)))
            rows.append({"file": f"{label}-{i}", "commit": label, "build": "torch", "layer": layer,
                         "status": "ok", "complete": True, "samples_ms": samples,
                         "hardware_hash": "0123456789abcdef", "hardware": {}, "software": {}, "busy": False})
        rows.append({**rows[-1], "layer": "(end to end)", "samples_ms": [sum(r["samples_ms"][0] for r in rows[-len(LAYERS):])] * 10})
    return pd.DataFrame(rows)


def test_a_one_layer_slowdown_is_caught_through_whole_run_shifts():
    """Runs that move +-15 % together hide a 10 % slowdown from a raw run-level test; judged
    beyond each run's common shift, only the slowed layer is flagged."""
    import pandas as pd  # noqa: PLC0415

    from harness.history.judging import judge_frames  # noqa: PLC0415

    rng = np.random.default_rng(20)
    past = pd.concat([_runs(rng, f"c{k}", 3) for k in range(6)], ignore_index=True)
    before, after = _runs(rng, "c6", 3), _runs(rng, "c7", 3, slow={"layer7": 0.10})
    j = judge_frames("c6", before, "c7", after, past)
    assert [(r.layer, r.change.verdict) for r in j.moved] == [("layer7", "slower")]
    slowed = next(r for r in j.judged if r.layer == "layer7")
    assert 0.07 < slowed.change.effect < 0.13
    # what is shown is measured: the raw geometric means of the run medians, not adjusted ones
    raw = [np.exp(np.mean([np.log(np.median(s)) for s in f[f.layer == "layer7"].samples_ms])) for f in (before, after)]
    assert (slowed.change.before_ms, slowed.change.after_ms) == pytest.approx(raw)


def test_identical_code_under_whole_run_shifts_stays_quiet():
    import pandas as pd  # noqa: PLC0415

    from harness.history.judging import judge_frames  # noqa: PLC0415

    rng = np.random.default_rng(21)
    frames = [_runs(rng, f"c{k}", 3) for k in range(26)]
    flagged = 0
    for k in range(6, 26):
        j = judge_frames(f"c{k - 1}", frames[k - 1], f"c{k}", frames[k], pd.concat(frames[:k - 1]))
        flagged += len(j.regressions)
    assert flagged <= 2  # 20 comparisons x 21 series at alpha 1 %: ~2 expected by chance at most


def test_two_builds_of_one_session_are_not_adjusted():
    """compare_builds judges two builds of the same runs: their whole difference is the point."""
    from harness.history.judging import judge_frames  # noqa: PLC0415

    rng = np.random.default_rng(22)
    fast = _runs(rng, "r", 3, run_shift=0.0)
    slow = fast.assign(samples_ms=[[x * 1.5 for x in s] for s in fast.samples_ms])
    j = judge_frames("a", fast, "b", slow, None, same_session=True)
    assert {r.change.verdict for r in j.judged} == {"slower"}


def test_a_suspect_series_is_screened_wide_and_confirmed_strict():
    """Judgement.suspects screens at alpha per series (not split over the series): a slowdown
    just below one session's strict verdict asks for a second session, and with both pooled
    the verdict catches what one session missed. Every flag is also a suspect."""
    import pandas as pd  # noqa: PLC0415

    from harness.history.judging import judge_frames  # noqa: PLC0415

    one_session = two_stage = 0
    for seed in range(30, 36):
        rng = np.random.default_rng(seed)
        noisy = {"layer_noise": 0.05}
        past = pd.concat([_runs(rng, f"c{k}", 3, **noisy) for k in range(6)], ignore_index=True)
        before = _runs(rng, "c6", 3, **noisy).assign(session="s0")
        after = _runs(rng, "c7", 3, slow={"layer7": 0.06}, **noisy).assign(session="s1")
        first = judge_frames("c6", before, "c7", after, past)
        assert {r.layer for r in first.regressions} <= {r.layer for r in first.suspects}
        one_session += any(r.layer == "layer7" for r in first.regressions)
        if any(r.layer == "layer7" for r in first.suspects):
            again = _runs(rng, "c7", 3, slow={"layer7": 0.06}, **noisy).assign(session="s2")
            again = again.assign(file=again["file"] + "-again")
            pooled = judge_frames("c6", before, "c7", pd.concat([after, again], ignore_index=True), past)
            two_stage += any(r.layer == "layer7" for r in pooled.regressions)
    assert two_stage > one_session


def test_a_confirmation_measures_the_suspects_builds_only_with_its_own_runs():
    from harness.runs import RunPlan, confirmation_plan  # noqa: PLC0415

    plan = RunPlan("local", "unet", ["caffe2-nnpack", "torch", "tvm"], warmup=2, repeats=20, runs=3)
    again = confirmation_plan(plan, [("tvm", "enc0.conv0"), ("caffe2-nnpack", "end-to-end"), ("tvm", "mid.up")], 5)
    assert again.builds == ["caffe2-nnpack", "tvm"] and again.runs == 5
    assert (again.model, again.repeats, again.warmup, again.device) == ("unet", 20, 2, "local")
    with pytest.raises(ValueError):
        confirmation_plan(plan, [("onnxruntime", "enc0.conv0")], 5)


def test_an_interleaved_confirmation_tells_a_moved_machine_from_a_changed_layer():
    """A machine that moved on one layer (+12 %) and stayed moved: HEAD measured again alone
    confirms the false alarm; measured beside its ancestor (A/B, interleaved=True) the move
    falls on both sides and nothing is flagged, while a real +10 % on top of the move is."""
    import pandas as pd  # noqa: PLC0415

    from harness.history.judging import confirmed_by, judge_frames, suspect_keys  # noqa: PLC0415

    def again(rows: pd.DataFrame, tag: str) -> pd.DataFrame:
        return rows.assign(file=rows["file"] + tag)

    rng = np.random.default_rng(40)
    moved = {"layer3": 0.12}
    past = pd.concat([_runs(rng, f"c{k}", 3) for k in range(6)], ignore_index=True)
    before = _runs(rng, "c6", 3)
    first = judge_frames("c6", before, "c7", _runs(rng, "c7", 3, slow=moved), past, pool_baseline=True)
    suspects = suspect_keys(first)
    assert ("torch", "layer3") in suspects
    alone = judge_frames("c6", before, "c7", again(_runs(rng, "c7", 3, slow=moved), "-alone"), past,
                         pool_baseline=True, series=suspects)
    assert "layer3" in {r.layer for r in confirmed_by(first, alone).regressions}
    base = again(_runs(rng, "c6", 3, slow=moved), "-ab")
    ab = judge_frames("c6", base, "c7", again(_runs(rng, "c7", 3, slow=moved), "-ab"), past,
                      series=suspects, interleaved=True)
    assert confirmed_by(first, ab).regressions == []
    slower = {"layer3": 1.12 * 1.10 - 1}
    real = judge_frames("c6", base, "c7", again(_runs(rng, "c7", 3, slow=slower), "-real"), past,
                        series=suspects, interleaved=True)
    assert [r.layer for r in confirmed_by(first, real).regressions] == ["layer3"]


def test_one_wild_run_of_an_interleaved_session_is_not_a_regression():
    """The one false alarm of 20 measured A/B confirmations (torch dec1.conv0 on unet): one HEAD
    run 50 % slow, the others beside the base's (its run medians as judged, each run's common
    shift taken out). With a machine-wide sigma the t-test calls it +15 % at tiny p; the runs' ranks do not agree, so it is not a regression (and is marked as
    such). A slowdown that moves every run is still one; a session pooling other sessions
    (not interleaved) is judged by the t-test alone."""
    noise = Noise(sigma=0.02, sigma_df=100, tau=0.0, tau_df=100, commits=20)
    base, wild = np.array([1.4984, 1.4654, 1.475]), np.array([1.5088, 2.2112, 1.4968])
    alone = judge(base, wild, noise, alpha=0.01, same_session=True)
    assert alone.verdict == "slower" and alone.p_value < 1e-4  # what the Gaussian model says
    ab = judge(base, wild, noise, alpha=0.01, same_session=True, interleaved=True)
    assert (ab.verdict, ab.runs_disagree) == ("same", True)
    assert ab.ratio == alone.ratio and ab.p_value == alone.p_value  # the change itself is shown
    real = judge(base, base * np.array([1.09, 1.12, 1.10]), noise, alpha=0.01, same_session=True, interleaved=True)
    assert (real.verdict, real.runs_disagree) == ("slower", False)
    faster = judge(base, base / 1.2, noise, alpha=0.01, same_session=True, interleaved=True)
    assert faster.verdict == "faster"
    # two runs a side cannot reach the rank test's 5 % (1/6 at best): the t-test judges alone
    two = judge(base[:2], wild[:2] * 1.3, noise, alpha=0.01, same_session=True, interleaved=True)
    assert (two.verdict, two.runs_disagree) == ("slower", False)

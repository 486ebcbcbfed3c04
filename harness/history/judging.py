"""Two sets of runs judged per build x layer, on one machine, against that machine's history.

The one place `harness compare`, `harness nightly`, `harness regressions` and `harness bisect`
turn run-level frames (one row per run x build x layer, as load_history and layers_frame give)
into verdicts (harness.history.verdict). Results of different hardware fingerprints are never
judged against each other: the caller gets one line saying the machine changed instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import pandas as pd

from harness.history.verdict import (LOOKBACK, Noise, Prior, RunChange, geometric_mean, judge, machine_prior,
                                     noise_evidence, noise_from)
from harness.results.fingerprint import UNKNOWN, describe, software_changes

Key = tuple[str, str]  # (build, layer)


@dataclass(frozen=True)
class Judged:
    build: str
    layer: str
    change: RunChange
    noise: Noise
    baseline_commits: int = 1  # commits whose runs the before side's level pooled (level_segment)


@dataclass(frozen=True)
class Judgement:
    a: str  # labels of the two sides
    b: str
    judged: list[Judged]
    machine_note: str | None = None  # why nothing was judged: the machine changed, or was busy
    software_notes: list[str] = field(default_factory=list)
    busy_note: str | None = None  # busy runs left out of the judgement
    adjusted: bool = False  # layers judged beyond their run's common shift (run_shifts)
    threshold: float = 0.05  # the verdict's settings, for the screen below
    alpha: float = 0.01
    confirmed: int | None = None  # suspects judged again on a second session (confirmed_by)

    @property
    def regressions(self) -> list[Judged]:
        return [j for j in self.judged if j.change.verdict == "slower"]

    @property
    def runs_disagree(self) -> list[Judged]:
        """Past the threshold and the noise band, but not flagged: an interleaved session's runs
        did not agree on it (verdict.runs_disagree)."""
        return [j for j in self.judged if j.change.runs_disagree]

    @property
    def suspects(self) -> list[Judged]:
        """Series worth measuring again before the verdict is final: flagged, or slower by the
        threshold at p < alpha as a series judged alone would be (alpha not split over the
        series). Why: the split makes one session's verdict strict; a slowdown just under it
        (a +10 % layer with a session's three runs) is caught when a second session is pooled
        in, but only if something asks for that session. Screening wide and confirming on a
        second session is the two-stage design of a perf sheriff's alert and re-run
        (confirmed_by)."""
        return [j for j in self.judged if j.change.verdict == "slower"
                or (j.change.effect >= self.threshold and j.change.p_value < self.alpha and j.change.ci_low > 1)]

    @property
    def moved(self) -> list[Judged]:
        return [j for j in self.judged if j.change.verdict != "same"]


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    keep = frame["status"] == "ok"
    if "complete" in frame:  # a run that stopped part-way is never a baseline
        keep &= frame["complete"].fillna(True).astype(bool)
    return frame[keep]


def _busy_mask(frame: pd.DataFrame) -> pd.Series:
    """Rows of runs measured in a busy session: one of its runs saw other processes hold the
    CPUs (frame column `busy`). The whole session, not only that run: load comes in bursts,
    and a run beside a busy one was slowed too, below the limit (seen here: a run at 10x its
    layers' times, the next one at +10 % on some layers only, which no run shift removes)."""
    busy = frame["busy"].fillna(False).astype(bool)
    if "session" not in frame:
        return busy
    return frame["session"].isin(set(frame.loc[busy, "session"]))


def busy_files(frame: pd.DataFrame) -> list[str]:
    """Runs left out as busy: those of a session during which other processes held the CPUs."""
    if frame.empty or "busy" not in frame:
        return []
    return list(dict.fromkeys(frame.loc[_busy_mask(frame), "file"]))


def _quiet(frame: pd.DataFrame) -> pd.DataFrame:
    """Without the busy sessions' rows (`busy` is a run column: every row of a run carries it)."""
    if frame.empty or "busy" not in frame:
        return frame
    return frame[~_busy_mask(frame)]


def busy_verdict(a_label: str, a: pd.DataFrame, b_label: str, b: pd.DataFrame) -> tuple[str | None, str | None]:
    """(why nothing can be judged, which runs are left out): a run measured while other
    processes held the CPUs is not the code's time (on 2 cores one competing process doubles a
    layer), so neither it nor the rest of its session is judged or used as a baseline."""
    left, empty = [], []
    for label, frame in ((a_label, a), (b_label, b)):
        busy = busy_files(frame)
        if not busy:
            continue
        runs = list(dict.fromkeys(frame["file"]))
        if len(busy) == len(runs):
            empty.append(label)
        elif busy:
            left.append(f"{len(busy)} of {len(runs)} runs of {label}")
    if empty:
        return (f"the machine was busy (other processes used the CPUs) during every run of "
                f"{' and '.join(empty)}: not judged; measure again on a quiet machine"), None
    return None, ("left out as busy (other processes used the CPUs): " + ", ".join(left)) if left else None


def machines(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["hardware_hash"])) if not frame.empty else []


def machine_note(a_label: str, a: pd.DataFrame, b_label: str, b: pd.DataFrame) -> str | None:
    """None when both sides are one and the same known machine; else the one line to print."""
    ma, mb = machines(a), machines(b)
    for label, found in ((a_label, ma), (b_label, mb)):
        if len(found) > 1:
            return f"results of {label} come from {len(found)} different machines: not compared"
    if ma == mb and ma != [UNKNOWN]:
        return None
    what_a = describe(a["hardware"].iloc[0]) if "hardware" in a and not a.empty else "?"
    what_b = describe(b["hardware"].iloc[0]) if "hardware" in b and not b.empty else "?"
    if ma == mb:
        return (f"machine unknown for {a_label} and {b_label} (results from before fingerprints): "
                "not compared")
    return f"machine changed between {a_label} and {b_label}: not compared ({what_a} vs {what_b})"


E2E = "(end to end)"  # the end-to-end row of run_rows (harness.history.compare)
Shifts = dict[tuple[str, str], float]  # (file, build) -> the run's common log shift
MIN_SHIFT_LAYERS = 5  # layers of a build a run needs for its common shift to be estimated


def _run_logs(frame: pd.DataFrame) -> pd.DataFrame:
    """file, build, layer, commit and log of the run median: one row per run x build x layer."""
    ok = _ok(frame)
    if ok.empty:
        return pd.DataFrame(columns=["file", "build", "layer", "commit", "log"])
    logs = [float(np.log(np.median(r.samples_ms))) if len(r.samples_ms) and np.median(r.samples_ms) > 0 else np.nan
            for r in ok.itertuples()]
    return ok[["file", "build", "layer", "commit"]].assign(log=logs).dropna(subset=["log"])


def layer_centres(sides: Sequence[pd.DataFrame]) -> dict[Key, float]:
    """Per (build, layer), the mean log run median over both sides: one fixed reference, so
    every run (sides and history) is measured against the same per-layer constants."""
    logs = pd.concat([_run_logs(f) for f in sides], ignore_index=True)
    logs = logs[logs["layer"] != E2E]
    return logs.groupby(["build", "layer"])["log"].mean().to_dict() if not logs.empty else {}


def run_shifts(frame: pd.DataFrame, centres: dict[Key, float]) -> Shifts:
    """Each run's common shift per build: the median, over its layers, of log(run median) minus
    the layer's centre. Why: on a shared VM (and on a board whose clock or neighbours move)
    whole runs get faster or slower together, by 15-30 % on this project's machines, and that
    shift, not the layers' own noise, is what hid real one-layer slowdowns. A median over a
    build's layers ignores the odd layer that really changed. What it removes is judged too:
    the end-to-end row is never adjusted, so a change of every layer shows there."""
    logs = _run_logs(frame)
    logs = logs[logs["layer"] != E2E]
    if logs.empty:
        return {}
    centre = np.array([centres.get((b, l), np.nan) for b, l in zip(logs["build"], logs["layer"])])
    logs = logs.assign(dev=logs["log"].to_numpy() - centre).dropna(subset=["dev"])
    grouped = logs.groupby(["file", "build"])["dev"]
    # a run with few layers has no common shift to speak of: a single layer would cancel itself
    return {k: v for k, v in grouped.median().items() if grouped.size()[k] >= MIN_SHIFT_LAYERS}


def _adjusted(row, shifts: Shifts | None) -> float:
    """A run median (ms) beyond its run's common shift; the end-to-end row as measured."""
    shift = (shifts or {}).get((row.file, row.build), 0.0) if row.layer != E2E else 0.0
    return float(np.exp(row.log - shift))


def runs_by_key(frame: pd.DataFrame, shifts: Shifts | None = None) -> dict[Key, np.ndarray]:
    """(build, layer) -> run medians, one per run (file); with shifts, each layer's run median
    divided by its run's common shift (the end-to-end row never)."""
    out: dict[Key, list[float]] = {}
    for r in _run_logs(frame).itertuples():
        out.setdefault((r.build, r.layer), []).append(_adjusted(r, shifts))
    return {k: np.array(v, float) for k, v in out.items()}


def history_by_key(history: pd.DataFrame, machine: str, exclude: Sequence[str],
                   centres: dict[Key, float] | None = None) -> dict[Key, list[np.ndarray]]:
    """(build, layer) -> run medians per commit, in the history's order, one machine only;
    with centres, adjusted for each run's common shift as the sides are."""
    frame = _quiet(_ok(history))
    if frame.empty:
        return {}
    frame = frame[(frame["hardware_hash"] == machine) & ~frame["commit"].isin(list(exclude))]
    shifts = run_shifts(frame, centres) if centres is not None else None
    out: dict[Key, dict[str, list[float]]] = {}
    for r in _run_logs(frame).itertuples():
        out.setdefault((r.build, r.layer), {}).setdefault(r.commit, []).append(_adjusted(r, shifts))
    return {k: [np.array(runs, float) for runs in per.values()] for k, per in out.items()}


def _software(frame: pd.DataFrame) -> dict:
    return frame["software"].iloc[-1] if "software" in frame and not frame.empty else {}


def level_segment(before: np.ndarray, past: list[np.ndarray], noise: Noise, threshold: float,
                  alpha: float) -> list[np.ndarray]:
    """The baseline: the before side's runs and those of the unbroken stretch of the commits
    just before it (newest first, at most LOOKBACK) that the same rule finds at its level.
    Why: the level of one commit's three runs is the least certain number in a comparison; the
    commits since the last change measure the same level, and pooling them (Conbench's
    lookback) shrinks that part of the standard error. The stretch ends at the first commit
    that differs, so a past step never drags the baseline."""
    pool = [before]
    for runs in reversed(past[-LOOKBACK:]):
        if runs.size == 0 or judge(runs, before, noise, threshold, alpha).verdict != "same":
            break
        pool.append(runs)
    return pool


def judge_frames(a_label: str, a: pd.DataFrame, b_label: str, b: pd.DataFrame,
                 history: pd.DataFrame | None = None, threshold: float = 0.05, alpha: float = 0.01,
                 same_session: bool = False, pool_baseline: bool = False,
                 series: Sequence[Key] | None = None, interleaved: bool = False) -> Judgement:
    """Every (build, layer) present on both sides, judged; the sides' commits are left out of
    the history used for the noise (they are counted as the sides themselves).

    alpha is the false-alarm rate of the whole comparison, not of each series: a nightly
    judges 28 layers x 5 builds, and at 1 % each, one in four nightlies of unchanged code would
    flag something (measured: 2 of 20). It is split evenly over the series (Bonferroni).
    pool_baseline: the history is the after side's ancestry in order (the nightly's), and the
    before side's level is pooled over its stretch of it (level_segment).
    series: judge only these (build, layer) series (bisect's one); every layer present still
    serves the runs' common shifts and the machine's prior.
    interleaved: the two sides' runs alternated in one session (measure_interleaved: the
    nightly's A/B confirmation), so no session shift separates them and only the between-run
    noise counts; unlike two builds of one run (same_session) each run's common shift is still
    taken out, and the baseline is not pooled: it is the runs measured beside the other side."""
    note = machine_note(a_label, _ok(a), b_label, _ok(b))
    if note:
        return Judgement(a_label, b_label, [], note)
    busy, left_out = busy_verdict(a_label, _ok(a), b_label, _ok(b))
    if busy:
        return Judgement(a_label, b_label, [], busy)
    a, b = _quiet(a), _quiet(b)
    machine = machines(_ok(a))[0]
    exclude = list(dict.fromkeys([*a["commit"], *b["commit"]]))
    # Two builds of one session (same_session) differ as a whole on purpose: never adjusted.
    centres = None if same_session else layer_centres([a, b])
    shifts_a = run_shifts(a, centres) if centres is not None else None
    shifts_b = run_shifts(b, centres) if centres is not None else None
    past = history_by_key(history if history is not None else pd.DataFrame(), machine, exclude, centres)
    before, after = runs_by_key(a, shifts_a), runs_by_key(b, shifts_b)
    raw_before, raw_after = (runs_by_key(a), runs_by_key(b)) if centres is not None else (before, after)
    keys = [k for k in before if k in after and (series is None or k in series)]
    # the after side may be measured in more than one session (a nightly's confirmation): their
    # shifts average out like runs do
    after_sessions = b["session"].nunique() if "session" in b and not b.empty else 1
    series_alpha = alpha / max(1, len(keys))
    evidence = {key: noise_evidence(past.get(key, []), [before[key], after[key]]) for key in keys}
    # The layers share one machine prior; the end-to-end rows keep the fixed one: they are not
    # adjusted for the run's common shift, so their noise is of another kind than the layers'.
    common = [k for k in before if k in after and k[1] != E2E]
    prior = machine_prior([evidence.get(k) or noise_evidence(past.get(k, []), [before[k], after[k]]) for k in common])
    judged = []
    for key in keys:
        noise = noise_from(evidence[key], prior if key[1] != E2E else Prior())
        pool = (level_segment(before[key], past.get(key, []), noise, threshold, series_alpha)
                if pool_baseline and not (same_session or interleaved) else [before[key]])
        change = judge(np.concatenate(pool), after[key], noise, threshold, series_alpha,
                       same_session or interleaved, sessions=(len(pool), after_sessions), interleaved=interleaved)
        # what is shown is what was measured: the raw geometric means of the two sides' run medians
        change = replace(change, before_ms=geometric_mean(raw_before[key]), after_ms=geometric_mean(raw_after[key]))
        judged.append(Judged(*key, change, noise, len(pool)))
    return Judgement(a_label, b_label, judged, None, software_changes(_software(a), _software(b)), left_out,
                     centres is not None, threshold, alpha)


def suspect_keys(judgement: Judgement) -> list[Key]:
    return [(j.build, j.layer) for j in judgement.suspects]


def confirmed_by(first: Judgement, second: Judgement) -> Judgement:
    """The verdict after a confirmation session: `second` judged the first's suspects alone
    (judge_frames(..., series=suspect_keys(first)), the new session against the same
    baseline), so alpha was split over the suspects only, not over every series.

    Why that keeps the false-alarm rate: the second session is independent of the first,
    which only chose what to test, so the chance that any unchanged series passes both is at
    most alpha (a discovery and a replication, as genome-wide studies confirm their hits).
    Pooling both sessions instead would reuse the data that chose the suspects, and a
    suspect is one whose first session ran high by chance. A suspect the second session
    cannot judge (a busy session, a failed build) keeps its first verdict. The changes shown
    for confirmed series are the second session's."""
    if not second.judged:
        return replace(first, busy_note="; ".join(filter(None, [first.busy_note, second.machine_note,
                                                                 second.busy_note])) or None)
    again = {(j.build, j.layer): j for j in second.judged}
    judged = [again.get((j.build, j.layer), j) for j in first.judged]
    return replace(first, judged=judged, confirmed=len(again))


def judged_summary(judged: Sequence[Judged]) -> str:
    """'torch enc1.conv2 +110.3% (slower), ...' or 'none'."""
    return ", ".join(f"{j.build} {j.layer} {j.change.effect:+.1%} ({j.change.verdict})" for j in judged) or "none"


def moved_summary(judgement: Judgement) -> str:
    return judged_summary(judgement.moved)

#!/usr/bin/env python3
"""How far can the verdict be trusted? False alarms on identical code, and the smallest
single-layer slowdown it catches, measured with real runs on this machine (issue 10).

    .venv/bin/python scripts/verdict_quality.py [--models unet,unet-tiny] [--builds A,B]
        [--comparisons 20] [--fractions 0.05,0.1,0.2,0.4] [--seed 0]
        [--history 4] [--runs 3] [--repeats 20] [--warmup 2] [--out DIR]

A "session" is what one nightly measures for one commit: --runs independent runs
(harness.runs: separate processes, builds interleaved). Sessions are measured one after the
other and each identical-code one joins the history that later verdicts estimate their noise
from, as nightlies do. The campaign is --comparisons rounds of:

1. False alarm trial: a session of identical code, judged against the previous one with the
   verdict's default settings (threshold 5 %, alpha 0.01). Reported: comparisons with at least
   one build x layer flagged, and flagged series of all series judged.
2. Sensitivity trials: a session in which one randomly drawn layer per fraction does real
   extra work (the test knob, harness/runner/testknob.py: a busy-wait of that fraction of the
   layer's median on the first build only, inside the layer's timing), judged against the session
   just before it. Layers are judged one by one, so each slowed layer is a single-layer trial.
   Reported per fraction: how often its layer was flagged; the smallest fraction caught in
   >= 95 % of trials; and any layer without a knob that was flagged. A knob session is not
   added to the history (it is not the code's time).

Both are judged as `harness nightly` judges: against the session before, the baseline pooled
over its level in the history, alpha split over the series, and any suspect series (a flag,
or p < alpha as a series alone: Judgement.suspects) confirmed by a second session that runs
the code without the knob and with it interleaved (the nightly's A/B against the ancestor:
A B B A A B ..., --confirm-runs runs a side of the suspects' builds only) and judges the
suspects alone on it, alpha split over them (--no-confirm: one session's verdict as it is).
A slowed layer counts as caught only if it was suspect after the first session and flagged
on the second.

Several fractions share a slowed session (one knob each) to keep a campaign within hours, but
their extra work moves every run's common shift a little (judging.run_shifts), so each knob
delivers a little less than its fraction (measured: +10 % knobs a median +8.75 % in the A/B
sessions). A single fraction (`--fractions 0.1`) slows one layer a session: a true one-layer
trial, as a real regression would be.

`--replay --out DIR` measures nothing: it judges DIR's stored sessions again with today's
verdict code (the seed draws the same layers from the same medians) into DIR/replayed.json.
`--resume` does the same and then measures the rounds not stored yet (more --comparisons,
or a campaign stopped early).

This is a benchmark, not a test: it prints the figures and writes them, with every session's
raw result files, under --out. `--comparisons 1 --fractions 0.5 --models unet-tiny --builds
torch --runs 2 --repeats 3` checks that it works in a minute.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from harness.builds import build_names, check_build_names  # noqa: E402
from harness.history.compare import E2E, run_rows  # noqa: E402
from harness.history.judging import confirmed_by, judge_frames, suspect_keys  # noqa: E402
from harness.runner.testknob import ENV as KNOB  # noqa: E402
from harness.history.verdict import MIN_LOOKBACK  # noqa: E402
from harness.runs import (DEFAULT_CONFIRM_RUNS, DEFAULT_REPEATS, DEFAULT_RUNS, RunPlan, Side,  # noqa: E402
                          confirmation_plan, measure_interleaved, measure_runs)

CAUGHT = 0.95
ROLE = "role.txt"  # in a session's folder: "confirmation" when it re-measured a flagged session
SIDES = "sides.json"  # in a confirmation's folder: which result files are the base's and which the head's


@dataclass
class ModelQuality:
    model: str
    builds: list[str]
    comparisons: int = 0
    comparisons_flagged: int = 0
    first_session_flagged: int = 0  # comparisons whose first session flagged something (before confirming)
    first_session_suspect: int = 0  # ... had a suspect series, so that a nightly would measure again
    confirmations: int = 0  # sessions measured again to confirm (identical and slowed alike)
    not_judged: int = 0  # sessions left out as busy (other processes used the CPUs): no trial
    series_judged: int = 0
    series_flagged: int = 0
    flagged: list[str] = field(default_factory=list)
    # identical-code series past the threshold and noise band in a confirmation, not flagged
    # because its interleaved runs disagreed (verdict.runs_disagree): the wild runs it caught
    runs_disagree: list[str] = field(default_factory=list)
    flagged_beside_knob: list[str] = field(default_factory=list)  # non-knob layers flagged in slowed sessions
    knobs: dict[str, dict[str, float]] = field(default_factory=dict)  # slowed session -> {layer: fraction}
    sensitivity: dict[str, list[bool]] = field(default_factory=dict)  # fraction -> caught per trial

    def smallest_caught(self) -> float | None:
        for fraction in sorted(self.sensitivity, key=float):
            hits = self.sensitivity[fraction]
            if hits and sum(hits) / len(hits) >= CAUGHT:
                return float(fraction)
        return None


class Campaign:
    """Sessions of one model, measured in order (or replayed from an earlier campaign's raw
    files: the same draws, judged by today's verdict code), with the history they build up."""

    def __init__(self, plan: RunPlan, out: Path, replay: bool = False, confirm: bool = True, resume: bool = False,
                 confirm_runs: int = DEFAULT_CONFIRM_RUNS):
        self.plan, self.out, self.history, self.replay, self.confirm = plan, out, pd.DataFrame(), replay, confirm
        self.confirm_runs = confirm_runs  # runs a side of a confirmation, as `harness nightly --confirm-runs`
        self.resume = resume  # replay what is stored, then measure the sessions that are not
        self.count = 0
        self.confirmations = 0  # sessions measured again

    def session(self, knob: str | None = None, suspects: list | None = None):
        """The next session's rows; for a confirmation of `suspects`, (base rows, head rows): the
        code without the knob and with it, runs interleaved, of the suspects' builds only (the
        nightly's A/B, harness.runs.confirmation_plan and measure_interleaved).
        A confirmation is marked as one in its folder, with which files are which side, so that
        a replay finds it where it was measured (and skips one its verdict no longer asks for).
        None: a replayed confirmation that was never measured."""
        confirmation = suspects is not None
        self.count += 1
        where = self.out / f"session{self.count:03d}"
        if self.replay and self.resume and not where.exists():
            self.replay = False  # past the stored campaign: measure from here on
        if self.replay:
            if (where / ROLE).is_file() and not confirmation:  # the original verdict asked for one
                return self.session(knob)
            if confirmation and not (where / ROLE).is_file():
                self.count -= 1
                return None
            sides = stored_sides(where, confirmation)
        elif confirmation:
            plan = confirmation_plan(self.plan, suspects, self.confirm_runs)
            base, head = measure_interleaved(plan, [Side(extra_env={KNOB: ""}), Side(extra_env={KNOB: knob or ""})],
                                             results_dir=where)
            (where / ROLE).write_text("confirmation\n")
            (where / SIDES).write_text(json.dumps({"base": [str(p.relative_to(where)) for p in base],
                                                   "head": [str(p.relative_to(where)) for p in head]}))
            sides = {"base": base, "head": head}
        else:
            sides = {"head": measure_runs(self.plan, results_dir=where, extra_env={KNOB: knob or ""})}
        # Each session is a "commit" of its own: identical code, measured at another time.
        rows = {side: run_rows(paths).assign(commit=f"session{self.count:03d}") for side, paths in sides.items()}
        return (rows["base"], rows["head"]) if confirmation else rows["head"]

    def judged(self, before: pd.DataFrame, knob: str | None = None) -> tuple[pd.DataFrame, Any, Any, Any]:
        """(the session's rows, its judgement, its first session's judgement, the confirmation
        session's (base, head) rows or None): suspects are confirmed as the nightly does
        (harness.nightly.nightly.confirm), by a session of the code without the knob and with
        it, interleaved, that judges them alone (judging.confirmed_by). The base runs are the
        code `before` measured, so they join its rows in the history, as a nightly stores them."""
        current = self.session(knob)
        first = j = self.judge(before, current)
        pair = None
        if first.suspects and self.confirm:
            pair = self.session(knob, suspects=suspect_keys(first))
            if pair is not None:
                base, extra = pair
                pair = base.assign(commit=before["commit"].iloc[0]), extra.assign(commit=current["commit"].iloc[0])
                j = confirmed_by(first, self.judge_ab(*pair, suspect_keys(first)))
                current = pd.concat([current, pair[1]], ignore_index=True)
                self.keep(pair[0])
                self.confirmations += 1
        return current, j, first, pair

    def keep(self, rows: pd.DataFrame) -> None:
        self.history = pd.concat([self.history, rows], ignore_index=True) if not self.history.empty else rows

    def judge(self, before: pd.DataFrame, after: pd.DataFrame, series=None):
        # as the nightly judges: the history is the ancestry, the baseline pooled over its level
        return judge_frames("before", before, "after", after, self.history, pool_baseline=True, series=series)

    def judge_ab(self, base: pd.DataFrame, head: pd.DataFrame, series):
        # as the nightly's confirmation judges: the two sides' runs were interleaved
        return judge_frames("before", base, "after", head, self.history, series=series, interleaved=True)


def stored_sides(where: Path, confirmation: bool) -> dict[str, list[Path]]:
    """A stored session's result files: {"head": [...]}, or a confirmation's two sides."""
    if not confirmation:
        paths = sorted(where.rglob("*.json"))
        if not paths:
            raise SystemExit(f"--replay: no stored session {where}")
        return {"head": paths}
    if not (where / SIDES).is_file():
        raise SystemExit(f"--replay: {where} is a confirmation of HEAD alone (an older campaign): the verdict now "
                         "confirms with an interleaved A/B session; measure a new campaign")
    return {side: [where / name for name in names] for side, names in json.loads((where / SIDES).read_text()).items()}


def series_labels(judged) -> list[str]:
    """'torch dec1.conv0 +15.5%' for each judged series."""
    return [f"{r.build} {r.layer} {r.change.effect:+.1%}" for r in judged]


def judge_identical(c: Campaign, q: ModelQuality, before: pd.DataFrame, i: int, n: int) -> pd.DataFrame:
    """A session of the unchanged code, judged against the one before: any flag is a false alarm.
    It then joins the history, as a nightly's would."""
    current, j, first, _ = c.judged(before)
    if j.machine_note:  # busy: nothing was judged, so this is no trial (and the session no history)
        q.not_judged += 1
        print(f"  identical code {i + 1}/{n}: not judged: {j.machine_note}", flush=True)
        return before
    q.comparisons += 1
    q.first_session_flagged += bool(first.regressions)
    q.first_session_suspect += bool(first.suspects)
    q.series_judged += len(j.judged)
    q.series_flagged += len(j.regressions)
    q.comparisons_flagged += bool(j.regressions)
    flags = series_labels(j.regressions)
    q.flagged += flags
    dismissed = series_labels(j.runs_disagree)
    q.runs_disagree += dismissed
    print(f"  identical code {i + 1}/{n}: {len(j.judged)} series, flagged: {', '.join(flags) or 'none'}"
          + (f"; runs disagreed on: {', '.join(dismissed)}" if dismissed else ""), flush=True)
    c.keep(current)
    return current


def layer_medians(rows: pd.DataFrame, build: str) -> dict[str, float]:
    ok = rows[(rows["status"] == "ok") & (rows["build"] == build) & (rows["layer"] != E2E)]
    return ok.groupby("layer")["median_ms"].median().to_dict()


def single_layer_caught(c: Campaign, first, pair: tuple[pd.DataFrame, pd.DataFrame] | None,
                        key: tuple[str, str], knobs: dict[str, float]) -> bool:
    """Would a nightly with only key's layer slowed have flagged it? Its first session's
    suspects would be that series and the chance ones of series without a knob (the other
    knobs' layers of key's build, and its end-to-end row they move, are not there); the second
    session judges just those, alpha split over them, as harness nightly does. Several knobs
    share a session to keep the campaign within hours; this keeps each one a single-layer
    trial, confirmation included."""
    slowed = {(key[0], layer) for layer in [*knobs, E2E]}  # the knobs' build runs every knob's wait
    suspects = [k for k in suspect_keys(first) if k == key or k not in slowed]
    if key not in suspects:
        return False
    if pair is None:  # --no-confirm (or a replayed campaign that stored no confirmation)
        return key in {(r.build, r.layer) for r in first.regressions}
    again = confirmed_by(first, c.judge_ab(*pair, suspects))
    return key in {(r.build, r.layer) for r in again.regressions}


def judge_slowed(c: Campaign, q: ModelQuality, before: pd.DataFrame, fractions: list[float],
                 rng: random.Random) -> None:
    """A session where len(fractions) distinct layers, drawn at random, each do real extra work
    of their own fraction of that layer's median on the first build (the knob's busy-wait,
    inside the layer's timing), judged against the identical-code session just before it.
    Layers are judged one by one, so each slowed layer is one single-layer trial; several per
    session keep the campaign within hours. Not added to the history: not the code's time."""
    build = q.builds[0]
    medians = layer_medians(before, build)
    chosen = dict(zip(rng.sample(sorted(medians), len(fractions)), fractions))
    knob = ",".join(f"{build}/{layer}={medians[layer] * f:.6f}" for layer, f in chosen.items())
    name = f"session{c.count + 1:03d}"
    _, j, first, pair = c.judged(before, knob)
    if j.machine_note:
        q.not_judged += 1
        print(f"  slowed session not judged: {j.machine_note}", flush=True)
        return
    q.knobs[name] = chosen
    flagged = {(r.build, r.layer) for r in j.regressions}
    caught = {layer for layer in chosen if single_layer_caught(c, first, pair, (build, layer), chosen)}
    for layer, fraction in chosen.items():
        q.sensitivity.setdefault(str(fraction), []).append(layer in caught)
    # only the first build runs the knob's wait; a layer with a knob is judged on that build alone
    # (the end-to-end row contains the slowed layers: its flag is a true one)
    others = sorted(f"{b} {layer}" for b, layer in flagged if b != build or layer not in [*chosen, E2E])
    q.flagged_beside_knob += others
    print("  slowed " + ", ".join(f"{layer} +{f:.0%} {'caught' if layer in caught else 'MISSED'}"
                                  for layer, f in chosen.items())
          + (f"; also flagged: {', '.join(others)}" if others else ""), flush=True)


def campaign(c: Campaign, q: ModelQuality, n: int, fractions: list[float], seed: int, history: int) -> None:
    """`history` identical-code sessions first (the nights a nightly has behind it before its
    verdicts count: the session noise needs MIN_LOOKBACK commits), then n rounds of: one
    identical-code session (a false-alarm trial), then one slowed session judged against it
    (a sensitivity trial per fraction)."""
    rng = random.Random(seed)
    for i in range(max(1, history)):
        before = c.session()
        c.keep(before)
        print(f"  history {i + 1}/{max(1, history)} measured", flush=True)
    for i in range(n):
        before = judge_identical(c, q, before, i, n)
        judge_slowed(c, q, before, fractions, rng)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="unet,unet-tiny")
    ap.add_argument("--builds", default=None, help="builds (default: every build; the first one gets the knob)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--comparisons", type=int, default=20)
    ap.add_argument("--fractions", default="0.05,0.1,0.2,0.4",
                    help="slowdowns tried; each slowed session slows one layer by each of them")
    ap.add_argument("--seed", type=int, default=0, help="which layers get slowed")
    ap.add_argument("--history", type=int, default=MIN_LOOKBACK,
                    help=f"identical-code sessions measured before the trials (default {MIN_LOOKBACK})")
    ap.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    ap.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="where the sessions and summary go (default: a new temp dir)")
    ap.add_argument("--no-confirm", action="store_true", help="judge flags from one session as they are")
    ap.add_argument("--confirm-runs", type=int, default=DEFAULT_CONFIRM_RUNS,
                    help=f"runs a side of a confirmation, of the suspects' builds (default {DEFAULT_CONFIRM_RUNS}, "
                         "as harness nightly)")
    ap.add_argument("--replay", action="store_true",
                    help="measure nothing: judge the sessions stored under --out again, with the same "
                         "options and seed (after a change of the verdict code)")
    ap.add_argument("--resume", action="store_true",
                    help="judge the sessions stored under --out again, then measure the rest of the "
                         "--comparisons rounds (a campaign stopped early, or more rounds)")
    args = ap.parse_args(argv)
    builds = check_build_names([b for b in (args.builds or "").split(",") if b] or build_names())
    if (args.replay or args.resume) and args.out is None:
        ap.error("--replay and --resume need --out: the campaign's folder")
    out = args.out or Path(tempfile.mkdtemp(prefix="verdict-quality-"))
    fractions = [float(f) for f in args.fractions.split(",")]
    summary = []
    for model in [m for m in args.models.split(",") if m]:
        print(f"{model}: {args.comparisons} rounds of an identical-code comparison and a session slowing "
              f"one layer each by {', '.join(f'+{f:.0%}' for f in fractions)} ({args.runs} runs a session)",
              flush=True)
        plan = RunPlan(args.device, model, builds, args.warmup, args.repeats, args.runs)
        session_maker = Campaign(plan, out / model, args.replay or args.resume, not args.no_confirm, args.resume,
                                 args.confirm_runs)
        q = ModelQuality(model, builds)
        campaign(session_maker, q, args.comparisons, fractions, args.seed, args.history)
        q.confirmations = session_maker.confirmations
        smallest = q.smallest_caught()
        print(f"{model}: false alarms in {q.comparisons_flagged}/{q.comparisons} comparisons "
              f"({q.first_session_flagged} flagged and {q.first_session_suspect} suspect before confirmation; "
              f"{q.confirmations} sessions measured again; {len(q.runs_disagree)} series dismissed as their runs "
              f"disagreed; {q.not_judged} sessions not judged as busy) "
              f"({q.series_flagged}/{q.series_judged} series; {len(q.flagged_beside_knob)} non-knob series "
              f"flagged in slowed sessions); smallest one-layer slowdown caught "
              f">= {CAUGHT:.0%}: {f'+{smallest:.0%}' if smallest is not None else 'none of those tried'}; "
              + "; ".join(f"+{float(f):.0%}: {sum(h)}/{len(h)}" for f, h in q.sensitivity.items()), flush=True)
        summary.append({**asdict(q), "smallest_caught": smallest})
    (out / ("replayed.json" if args.replay else "summary.json")).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"summary and raw sessions in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""How far can the verdict be trusted? False alarms on identical code, and the smallest
single-layer slowdown it catches, measured with real runs on this machine (issue 10).

    .venv/bin/python scripts/verdict_quality.py [--models unet,unet-tiny] [--builds A,B]
        [--comparisons 20] [--trials 20] [--fractions 0.05,0.1,0.2,0.4,0.8]
        [--runs 3] [--repeats 10] [--warmup 2] [--out DIR]

A "session" is what one nightly measures for one commit: --runs independent runs
(harness.runs: separate processes, builds interleaved). Sessions are measured one after the
other and each joins the history that later verdicts estimate their noise from, as nightlies do.

1. False alarms: sessions of identical code, each judged against the previous one with the
   verdict's default settings (threshold 5 %, alpha 0.01). Reported: comparisons with at least
   one build x layer flagged (of --comparisons), and flagged series of all series judged.
2. Sensitivity: a session whose ONE layer does real extra work (the test knob,
   harness/runner/testknob.py: a busy-wait of fraction x that layer's median, inside the
   layer's timing), judged against the session before it. Layers rotate over the model's
   layers. Reported per fraction: how often that layer is flagged; the smallest fraction caught
   in >= 95 % of trials. A knob session is not added to the history (it is not the code's time).

This is a benchmark, not a test: it prints the figures and writes them, with every session's
raw result files, under --out. It takes hours at the defaults; the lead runs it on a quiet
machine. `--comparisons 2 --trials 1 --fractions 0.5 --models unet-tiny --builds torch
--runs 2 --repeats 3` checks that it works in a few minutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from harness.builds import build_names, check_build_names  # noqa: E402
from harness.history.compare import run_rows  # noqa: E402
from harness.history.judging import judge_frames  # noqa: E402
from harness.runner.testknob import ENV as KNOB  # noqa: E402
from harness.runs import RunPlan, measure_runs  # noqa: E402

CAUGHT = 0.95


@dataclass
class ModelQuality:
    model: str
    builds: list[str]
    comparisons: int = 0
    comparisons_flagged: int = 0
    series_judged: int = 0
    series_flagged: int = 0
    flagged: list[str] = field(default_factory=list)
    sensitivity: dict[str, list[bool]] = field(default_factory=dict)  # fraction -> caught per trial

    def smallest_caught(self) -> float | None:
        for fraction in sorted(self.sensitivity, key=float):
            hits = self.sensitivity[fraction]
            if hits and sum(hits) / len(hits) >= CAUGHT:
                return float(fraction)
        return None


class Campaign:
    """Sessions of one model, measured in order, with the history they build up."""

    def __init__(self, plan: RunPlan, out: Path):
        self.plan, self.out, self.history = plan, out, pd.DataFrame()
        self.count = 0

    def session(self, knob: str | None = None) -> pd.DataFrame:
        self.count += 1
        where = self.out / f"session{self.count:03d}"
        env = {KNOB: knob or ""}
        paths = measure_runs(self.plan, results_dir=where, extra_env=env)
        # Each session is a "commit" of its own: identical code, measured at another time.
        rows = run_rows(paths).assign(commit=f"session{self.count:03d}")
        return rows

    def keep(self, rows: pd.DataFrame) -> None:
        self.history = pd.concat([self.history, rows], ignore_index=True) if not self.history.empty else rows

    def judge(self, before: pd.DataFrame, after: pd.DataFrame):
        return judge_frames("before", before, "after", after, self.history)


def false_alarms(c: Campaign, q: ModelQuality, n: int) -> pd.DataFrame:
    previous = c.session()
    c.keep(previous)
    for i in range(n):
        current = c.session()
        j = c.judge(previous, current)
        q.comparisons += 1
        q.series_judged += len(j.judged)
        q.series_flagged += len(j.regressions)
        q.comparisons_flagged += bool(j.regressions)
        q.flagged += [f"{r.build} {r.layer} {r.change.effect:+.1%}" for r in j.regressions]
        print(f"  identical code {i + 1}/{n}: {len(j.judged)} series, flagged: "
              f"{', '.join(q.flagged[-len(j.regressions):]) if j.regressions else 'none'}", flush=True)
        c.keep(current)
        previous = current
    return previous


def layer_medians(rows: pd.DataFrame, build: str) -> dict[str, float]:
    ok = rows[(rows["status"] == "ok") & (rows["build"] == build) & (rows["layer"] != "(end to end)")]
    return ok.groupby("layer")["median_ms"].median().to_dict()


def sensitivity(c: Campaign, q: ModelQuality, baseline: pd.DataFrame, fractions: list[float],
                trials: int) -> None:
    build = q.builds[0]
    medians = layer_medians(baseline, build)
    layers = sorted(medians)
    for fraction in fractions:
        hits = q.sensitivity.setdefault(str(fraction), [])
        for t in range(trials):
            layer = layers[(t * 7) % len(layers)]  # 7 is coprime with the layer counts: all visited
            knob = f"{layer}={medians[layer] * fraction:.6f}"
            slowed = c.session(knob)
            j = c.judge(baseline, slowed)
            caught = any(r.build == build and r.layer == layer for r in j.regressions)
            others = [f"{r.build} {r.layer}" for r in j.regressions if r.layer != layer]
            hits.append(caught)
            print(f"  +{fraction:.0%} on {build} {layer}: {'caught' if caught else 'missed'}"
                  + (f" (also flagged: {', '.join(others)})" if others else ""), flush=True)
            # the next trial's baseline: a fresh session of the real code, kept in the history
            baseline = c.session()
            c.keep(baseline)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="unet,unet-tiny")
    ap.add_argument("--builds", default=None, help="builds (default: every build; the first one gets the knob)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--comparisons", type=int, default=20)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--fractions", default="0.05,0.1,0.2,0.4,0.8")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="where the sessions and summary go (default: a new temp dir)")
    args = ap.parse_args(argv)
    builds = check_build_names([b for b in (args.builds or "").split(",") if b] or build_names())
    out = args.out or Path(tempfile.mkdtemp(prefix="verdict-quality-"))
    fractions = [float(f) for f in args.fractions.split(",")]
    summary = []
    for model in [m for m in args.models.split(",") if m]:
        print(f"{model}: {args.comparisons} identical-code comparisons, then {args.trials} trials at "
              f"{', '.join(f'+{f:.0%}' for f in fractions)} ({args.runs} runs a session)", flush=True)
        plan = RunPlan(args.device, model, builds, args.warmup, args.repeats, args.runs)
        campaign = Campaign(plan, out / model)
        q = ModelQuality(model, builds)
        last = false_alarms(campaign, q, args.comparisons)
        sensitivity(campaign, q, last, fractions, args.trials)
        smallest = q.smallest_caught()
        print(f"{model}: false alarms in {q.comparisons_flagged}/{q.comparisons} comparisons "
              f"({q.series_flagged}/{q.series_judged} series); smallest one-layer slowdown caught "
              f">= {CAUGHT:.0%}: {f'+{smallest:.0%}' if smallest is not None else 'none of those tried'}; "
              + "; ".join(f"+{float(f):.0%}: {sum(h)}/{len(h)}" for f, h in q.sensitivity.items()), flush=True)
        summary.append({**asdict(q), "smallest_caught": smallest})
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"summary and raw sessions in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

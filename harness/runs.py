"""Several independent runs of one measurement: separate processes, builds in varying order.

The run is the unit every verdict is judged on (harness.history.verdict), so one measurement
is N runs, each a fresh `python -m harness run` process (its own thread pools, memory
placement, allocator state) of the checkout being measured (this one, or a past commit's
worktree), each saved as its own result file with all its raw samples and a `run_group`
block tying the N together. Build order rotates from run to run and reverses on
every other one (Chromium Pinpoint's interleaving): a build is not always measured first,
warm, or right after the heaviest one.

Two checkouts (or one run two ways) can be measured interleaved too (measure_interleaved):
run i of every side, then run i+1 in the reverse order of sides (A B B A A B), so a drift of
the machine during the session falls on both sides alike. The nightly's confirmation measures
a doubted commit that way against the commit it was compared with (Pinpoint's A/B).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from harness.errors import UserError
from harness.results.store import RESULTS_DIR, load_result, save_new_result

DEFAULT_RUNS = 3
# Runs a side of an A/B confirmation (the nightly's second look at a suspect series). Why more
# than a session's 3: the confirmation decides alone, on a few suspects, and its power is what
# a slowdown just past the threshold needs - with 3 runs a side a layer whose runs vary by 8-10 %
# (a memory-bound resize on unet) was missed at +20 % and +40 % (issue 10, campaign 5), and the
# rank rule (verdict.runs_disagree) needs every run of one side past every run of the other.
# It measures only the suspects' builds, so 5 runs a side of one build cost less than 3 of two.
DEFAULT_CONFIRM_RUNS = 5
# Timed passes per build in a measurement that verdicts judge (nightly, backfill, bisect): the
# run median of 10 samples carried most of the between-run noise on this project's machines
# (a layer's samples spread 15-30 %); 20 halves the cost of a wider band for ~10 s a run.
DEFAULT_REPEATS = 20
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RunPlan:
    device: str | None
    model: str
    builds: list[str]
    warmup: int
    repeats: int
    runs: int = DEFAULT_RUNS
    devices_file: Path | None = None


def confirmation_plan(plan: RunPlan, suspects: Sequence[tuple[str, str]], runs: int) -> RunPlan:
    """The plan of an A/B confirmation of `suspects` ((build, layer) series): only the builds
    that have one, in the plan's order, `runs` runs a side. A build's every layer is still
    measured: the run's common shift is a median over them (judging.run_shifts)."""
    builds = [b for b in plan.builds if b in {build for build, _ in suspects}]
    if not builds:
        raise ValueError("a confirmation needs at least one suspect series of the plan's builds")
    return replace(plan, builds=builds, runs=runs)


def build_orders(builds: list[str], runs: int) -> list[list[str]]:
    """Run i: the builds rotated by i; each full cycle of rotations alternates direction, so
    every build takes every position and follows different neighbours."""
    orders = []
    n = max(1, len(builds))
    for i in range(runs):
        base = builds if (i // n) % 2 == 0 else builds[::-1]
        k = i % n
        orders.append(base[k:] + base[:k])
    return orders


def run_command(plan: RunPlan, order: list[str], output: Path) -> list[str]:
    """Only options every version of `harness run` has: a past commit's code runs it too."""
    command = [sys.executable, "-m", "harness", "run", "--model", plan.model, "--builds", ",".join(order),
               "--warmup", str(plan.warmup), "--repeats", str(plan.repeats), "--output", str(output)]
    if plan.device:
        command += ["--device", plan.device]
    if plan.devices_file:
        command += ["--devices-file", str(plan.devices_file)]
    return command


@dataclass(frozen=True)
class Side:
    """What one side of an interleaved measurement runs: a checkout, and variables for its
    processes only (scripts/verdict_quality.py's knob)."""
    repo: Path = REPO
    extra_env: dict[str, str] | None = None


Progress = Callable[[int, int, list[str]], None]  # (run index, runs, build order)


def run_one(plan: RunPlan, order: list[str], group: dict[str, object], index: int, repo: Path,
            results_dir: Path | None, extra_env: dict[str, str] | None = None) -> Path:
    """One run in a fresh process of the checkout `repo`; its stored result file."""
    env = {**os.environ, **(extra_env or {}),
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    with tempfile.TemporaryDirectory(prefix="harness-run-") as tmp:
        out = Path(tmp) / "run.json"
        proc = subprocess.run(run_command(plan, order, out), cwd=repo, env=env,
                              capture_output=True, text=True)
        if not out.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"run {index + 1} of {plan.runs} failed (exit {proc.returncode}): {tail}")
        doc = load_result(out)
    doc["run_group"] = {**group, "index": index, "of": plan.runs, "order": order}
    return save_new_result(doc, results_dir or RESULTS_DIR)


def measure_interleaved(plan: RunPlan, sides: Sequence[Side], results_dir: Path | None = None,
                        progress: Progress = lambda index, total, order: None) -> list[list[Path]]:
    """plan.runs runs of each side, interleaved: round i runs every side once (build order
    i), every other round in the reverse order of sides. Per side, its stored result files in
    run order; each side is a run group of its own (its session), naming the others'."""
    if plan.runs < 1:
        raise UserError("--runs must be at least 1")
    ids = [uuid.uuid4().hex[:12] for _ in sides]
    groups = [{"id": i, **({"interleaved_with": [o for o in ids if o != i]} if len(ids) > 1 else {})} for i in ids]
    paths: list[list[Path]] = [[] for _ in sides]
    for index, order in enumerate(build_orders(plan.builds, plan.runs)):
        progress(index, plan.runs, order)
        turn = range(len(sides)) if index % 2 == 0 else reversed(range(len(sides)))
        for s in turn:
            paths[s].append(run_one(plan, order, groups[s], index, sides[s].repo, results_dir, sides[s].extra_env))
    return paths


def measure_runs(plan: RunPlan, repo: Path = REPO, results_dir: Path | None = None,
                 progress: Progress = lambda index, total, order: None,
                 extra_env: dict[str, str] | None = None) -> list[Path]:
    """plan.runs runs of one checkout, one after the other; the stored result files, in run order."""
    return measure_interleaved(plan, [Side(repo, extra_env)], results_dir, progress)[0]

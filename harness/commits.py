"""Measure any commit: `harness run --commit REV`, `harness backfill A..B`, `harness bisect`.

A past commit is measured in a temporary `git worktree` of this repository, with the current
Python environment and the current devices file: the code is the commit's, everything else is
today's. Runs are harness.runs' (separate processes, builds interleaved); the results are
stored under this checkout's results/ like any other, filed under that commit. A commit
already measured on this machine (same hardware fingerprint) is not measured again.

Bisection judges each midpoint against GOOD with the one verdict rule
(harness.history.judging: runs as the unit, noise from the machine's history) and prints
every step.
"""
from __future__ import annotations

import contextlib
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from harness.devices.config import DEFAULT_DEVICES_FILE, Device
from harness.errors import UserError
from harness.history.history import load_history
from harness.history.judging import judge_frames
from harness.history.verdict import RunChange
from harness.report.inputs import commit_range, resolve_commit
from harness.results import fingerprint
from harness.results.document import REPO, git
from harness.results.store import RESULTS_DIR
from harness.runs import RunPlan, measure_runs

Say = Callable[[str], None]


@contextlib.contextmanager
def worktree(commit: str, repo: Path = REPO) -> Iterator[Path]:
    """A detached worktree of `commit`, removed afterwards (also after a failure)."""
    with tempfile.TemporaryDirectory(prefix="harness-wt-") as tmp:
        path = Path(tmp) / "wt"
        proc = subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(path), commit],
                              cwd=repo, capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"git worktree add {commit[:12]} failed: {proc.stderr.strip()}")
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=repo,
                           capture_output=True, text=True)


def local_machine(device: Device) -> str | None:
    """This host's hardware hash for a local device; None for a remote one (known after a run)."""
    if device.transport != "local":
        return None
    return fingerprint.hardware_hash(fingerprint.collect_hardware(device))


def measured_here(history: pd.DataFrame, commit: str, machine: str | None) -> bool:
    if history.empty or machine is None:
        return False
    rows = history[(history["commit"] == commit) & (history["hardware_hash"] == machine)]
    return not rows.empty


def _fill_fingerprint(paths: list[Path], device: Device) -> None:
    """A commit from before fingerprints records none; a local run's machine is this host."""
    import json  # noqa: PLC0415

    from harness.results.store import load_result, save_result  # noqa: PLC0415

    for path in paths:
        doc = load_result(path)
        if doc["fingerprint"]["hardware_hash"] == fingerprint.UNKNOWN and device.transport == "local":
            found = fingerprint.with_tuning(fingerprint.collect_fingerprint(device), doc["builds"])
            doc["fingerprint"] = found
            save_result(json.loads(json.dumps(doc)), path)


def measure_commit(plan: RunPlan, device: Device, commit: str, repo: Path = REPO,
                   results_dir: Path = RESULTS_DIR) -> list[Path]:
    """plan.runs runs of `commit`'s code, stored under this checkout's results."""
    devices_file = (plan.devices_file or DEFAULT_DEVICES_FILE).resolve()
    with worktree(commit, repo) as path:
        plan = RunPlan(plan.device, plan.model, plan.builds, plan.warmup, plan.repeats, plan.runs,
                       devices_file)
        paths = measure_runs(plan, path, results_dir)
    _fill_fingerprint(paths, device)
    return paths


def ensure_measured(plan: RunPlan, device: Device, commit: str, say: Say,
                    results_dir: Path = RESULTS_DIR) -> None:
    history = load_history(device.name, plan.model, results_dir)
    if measured_here(history, commit, local_machine(device)):
        say(f"{commit[:12]}: already measured on this machine")
        return
    say(f"{commit[:12]}: measuring {plan.runs} run(s) in a temporary worktree")
    measure_commit(plan, device, commit, results_dir=results_dir)


def backfill(plan: RunPlan, device: Device, spec: str, say: Say, results_dir: Path = RESULTS_DIR) -> list[str]:
    """Measure every commit of A..B (A included) not yet measured on this machine."""
    _, _, commits = commit_range(spec)
    if commits is None:
        raise UserError(f"{spec}: git cannot list this range in {REPO}")
    for commit in commits:
        ensure_measured(plan, device, commit, say, results_dir)
    return commits


@dataclass(frozen=True)
class Step:
    commit: str
    change: RunChange
    slower: bool


def _judge(plan: RunPlan, device: Device, good: str, commit: str, build: str, layer: str,
           threshold: float, alpha: float, results_dir: Path) -> RunChange:
    history = load_history(device.name, plan.model, results_dir)
    # the build's every layer: they give each run's common shift; only the one layer is judged
    rows = history[history["build"] == build]
    machine = local_machine(device)
    if machine is not None:
        rows = rows[rows["hardware_hash"] == machine]
    a, b = rows[rows["commit"] == good], rows[rows["commit"] == commit]
    if a[a["layer"] == layer].empty or b[b["layer"] == layer].empty:
        raise UserError(f"no successful {build} {layer} results for {good[:12]} and {commit[:12]}: "
                        f"check --build and --layer")
    judgement = judge_frames(good[:12], a, commit[:12], b, rows, threshold, alpha, series=[(build, layer)])
    if judgement.machine_note:
        raise UserError(judgement.machine_note)
    return judgement.judged[0].change


def bisect(plan: RunPlan, device: Device, good_ref: str, bad_ref: str, build: str, layer: str,
           say: Say, threshold: float = 0.05, alpha: float = 0.01,
           results_dir: Path = RESULTS_DIR) -> str:
    """The first commit of GOOD..BAD (first-parent line) where `layer` of `build` is slower
    than at GOOD; every step said."""
    good, bad = resolve_commit(good_ref), resolve_commit(bad_ref)
    listed = git("rev-list", "--first-parent", "--reverse", f"{good}..{bad}")
    if not listed:
        raise UserError(f"{good_ref}..{bad_ref}: no commits between them (is {good_ref} an ancestor of {bad_ref}?)")
    line = [good, *listed.split()]
    plan = RunPlan(plan.device, plan.model, [build], plan.warmup, plan.repeats, plan.runs, plan.devices_file)
    for commit in (good, bad):
        ensure_measured(plan, device, commit, say, results_dir)
    first = _judge(plan, device, good, bad, build, layer, threshold, alpha, results_dir)
    say(f"bad {bad[:12]} against good {good[:12]}: {_describe(first)}")
    if first.verdict != "slower":
        raise UserError(f"{build} {layer} is not slower at {bad_ref} than at {good_ref} "
                        f"({first.effect:+.1%}, noise band ±{first.band:.1%}): nothing to bisect")
    lo, hi = 0, len(line) - 1  # line[lo] is good, line[hi] is slower
    step = 0
    while hi - lo > 1:
        step += 1
        mid = (lo + hi) // 2
        ensure_measured(plan, device, line[mid], say, results_dir)
        change = _judge(plan, device, good, line[mid], build, layer, threshold, alpha, results_dir)
        slower = change.verdict == "slower"
        say(f"step {step}: {line[mid][:12]} against good {good[:12]}: {_describe(change)} -> "
            f"{'bad' if slower else 'good'} ({hi - lo - 1} commits left)")
        lo, hi = (lo, mid) if slower else (mid, hi)
    return line[hi]


def _describe(change: RunChange) -> str:
    return (f"{change.effect:+.1%} (95% CI {change.ci_low - 1:+.1%} .. {change.ci_high - 1:+.1%}, "
            f"noise band ±{change.band:.1%}, {change.runs_before}/{change.runs_after} runs) "
            f"{change.verdict}")

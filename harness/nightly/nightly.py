"""`harness nightly`: the asv suite on the current commit, asv's HTML, the per-layer report, and
the verdict against the nearest measured ancestor of HEAD (exit 1 on a regression).

For each device: `asv machine` (named <device>-<hardware hash>, in the repository's own asv
machine file), one `asv run --environment existing --set-commit-hash HEAD` for all of
--models (benchmarks/ measures through harness.nightly.suite: --runs independent runs per
model, each stored under results/runs/<device>/). Then each model on its own: every build x
layer of HEAD's runs of that model judged against that model's runs of the nearest ancestor
of HEAD measured on the same machine (harness.history.judging: run-level test, noise from that
machine's history of that model), confirmed, when in doubt, by measuring that model again beside the ancestor (an interleaved A/B
session, see confirm).
Then `asv publish` (reports/asv/) and `harness report` on this commit's result files, one page
per device (several models: listed side by side, each with its own page). The last line says, per device and model, what was compared with what,
how many build x layer series were judged and which moved.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console

from harness.errors import UserError
from harness.history import Regression, load_history
from harness.commits import worktree
from harness.history.ancestry import nearest_measured_ancestor
from harness.history.command import print_regressions
from harness.history.judging import (Judgement, confirmed_by, judge_frames, judged_summary, machines, moved_summary,
                                     suspect_keys)
from harness.nightly import asvtool, suite
from harness.results.document import git, git_commit


@dataclass(frozen=True)
class DeviceOutcome:
    """The verdict on one model on one device."""
    device: str
    model: str
    previous: str | None
    regressions: list[Regression]
    files: list[Path]
    judgement: Judgement | None = None
    notes: list[str] = field(default_factory=list)  # machine changed, software changed

    @property
    def label(self) -> str:
        return f"{self.device} {self.model}"


def suite_env(args: argparse.Namespace, device: str, models: list[str]) -> dict[str, str]:
    env = {"HARNESS_DEVICE": device, "HARNESS_MODELS": ",".join(models),
           "HARNESS_REPEATS": str(args.repeats), "HARNESS_WARMUP": str(args.warmup),
           "HARNESS_RUNS": str(args.runs), "HARNESS_BUILDS": args.builds or ""}
    if args.devices_file:
        env["HARNESS_DEVICES_FILE"] = str(Path(args.devices_file).resolve())
    return env


OPTION_OF = {"HARNESS_DEVICE": "--devices", "HARNESS_MODELS": "--models", "HARNESS_MODEL": "--models",
             "HARNESS_REPEATS": "--repeats", "HARNESS_WARMUP": "--warmup", "HARNESS_RUNS": "--runs",
             "HARNESS_BUILDS": "--builds", "HARNESS_DEVICES_FILE": "--devices-file"}
# Older names the suite still reads (when the new one is unset): variable -> the one it stands for
LEGACY = {"HARNESS_MODEL": "HARNESS_MODELS"}


def refuse_conflicting_env(wanted: dict[str, str], environ: dict[str, str] | None = None) -> None:
    """The suite reads HARNESS_* variables; the nightly sets them from its options. A variable
    already set to something else would be silently overridden: refuse it instead. A legacy
    name (HARNESS_MODEL=mobilenet-v2 in an old cron line) is overridden just as silently by the
    new one the nightly sets, so it must agree with it too."""
    environ = dict(os.environ) if environ is None else environ
    legacy = {old: wanted[new] for old, new in LEGACY.items() if new in wanted}
    for name, value in {**wanted, **legacy}.items():
        if name in environ and environ[name] != value:
            raise UserError(f"{name}={environ[name]!r} is set, but harness nightly measures with "
                            f"{OPTION_OF[name]} ({value!r} here): pass {OPTION_OF[name]} or unset {name}")


def _ancestors(head: str) -> set[str]:
    return set((git("rev-list", head, repo=asvtool.REPO) or "").split())


def against_ancestor(history: pd.DataFrame, head: str, threshold: float,
                     alpha: float) -> tuple[str | None, Judgement | None, list[str]]:
    """(ancestor compared with, its judgement, notes) for HEAD's runs in `history`."""
    ok = history[history["status"] == "ok"]
    mine = ok[ok["commit"] == head]
    if mine.empty:
        raise UserError(f"the suite stored no result for commit {head[:12]}")
    here = machines(mine)
    if len(here) != 1:
        return None, None, [f"results of {head[:12]} come from {len(here)} machines: not compared"]
    same = ok[ok["hardware_hash"] == here[0]]
    previous = nearest_measured_ancestor(head, list(dict.fromkeys(same["commit"])), asvtool.REPO)
    nearest_any = nearest_measured_ancestor(head, list(dict.fromkeys(ok["commit"])), asvtool.REPO)
    notes = []
    if nearest_any and nearest_any != previous:
        notes.append(f"machine changed between {nearest_any[:12]} and {head[:12]}: not compared")
    if previous is None:
        return None, None, notes
    lineage = _ancestors(head)
    past = same[same["commit"].isin(lineage) & (same["commit"] != head)]
    judgement = judge_frames(previous[:12], same[same["commit"] == previous], head[:12], mine,
                             past, threshold, alpha, pool_baseline=True)
    if judgement.busy_note:
        notes.append(judgement.busy_note)
    if judgement.software_notes:
        notes.append(f"software changed: {'; '.join(judgement.software_notes)}")
    return previous, judgement, notes


def confirm(args: argparse.Namespace, device: str, model: str, previous: str, head: str, env: dict[str, str],
            first: Judgement, console: Console) -> tuple[pd.DataFrame, Judgement, list[str]]:
    """Measure HEAD again, interleaved with the ancestor it was compared with (Pinpoint's A/B:
    `previous` in a temporary worktree, runs alternating A B B A A B), and judge the first
    verdict's suspects on that session alone, as a perf sheriff re-runs an alert before filing
    it; any suspect series asks (Judgement.suspects), not only a flag.
    Why A/B rather than HEAD alone against the stored baseline: a machine that moves and stays
    moved (a neighbour on the VM host, a clock step) shifts a layer by 5-15 % for both of HEAD's
    sessions, which no comparison with last night's runs can tell from a change of the code;
    measured side by side, both commits get the same machine, and only the between-run noise
    is left (judge_frames(..., interleaved=True)). The second session tests only the suspects,
    so alpha is split over them, not over every series (judging.confirmed_by). Only `model` is
    measured again: the other models' verdicts stand on their own sessions."""
    flagged, suspects = len(first.regressions), suspect_keys(first)
    console.print(f"nightly: {device} {model}: {flagged} series flagged, {len(suspects)} suspect; measuring "
                  f"{previous[:12]} and {head[:12]} again, interleaved, to confirm", highlight=False)
    config = suite.config_from_env({**os.environ, **env})
    with worktree(previous, asvtool.REPO) as base:
        base_files, head_files = suite.measure_model_against(config, model, base, suspects, args.confirm_runs)
    history = load_history(device, model)
    second = judge_frames(previous[:12], history[history["file"].isin(base_files)], head[:12],
                          history[history["file"].isin(head_files)], history, args.threshold, args.alpha,
                          series=suspects, interleaved=True)
    notes = [n for n in (second.machine_note, second.busy_note) if n]
    judgement = confirmed_by(first, second)
    notes.append(f"confirmation: {flagged} series flagged and {len(suspects)} suspect after one session of "
                 f"{head[:12]}; {head[:12]} measured again beside {previous[:12]}, judging the suspects alone, "
                 f"flags {len(judgement.regressions)}")
    if second.runs_disagree:
        notes.append("not flagged, though past the threshold and the noise band, because the interleaved runs do "
                     f"not agree on it (one wild run): {judged_summary(second.runs_disagree)}")
    return history, judgement, notes


def _regressions(judgement: Judgement | None, head: str) -> list[Regression]:
    if judgement is None:
        return []
    return [Regression.of(j.build, j.layer, head, j.change) for j in judgement.regressions]


def stored_hardware_hash(device: str, models: list[str]) -> str | None:
    """The newest stored run's fingerprint on `device` (a remote device's asv machine name), from
    the first model that has one: the machine is the device's, whatever model ran on it."""
    for model in models:
        stored = load_history(device, model)
        if not stored.empty:
            return stored["hardware_hash"].iloc[-1]
    return None


def run_device(args: argparse.Namespace, device, models: list[str], head: str,
               console: Console) -> list[DeviceOutcome]:
    """One asv run of every model on `device`, then each model judged on its own history."""
    env = suite_env(args, device.name, models)
    refuse_conflicting_env(env)
    machine = asvtool.asv_machine(device, stored_hardware_hash(device.name, models))
    console.print(f"nightly: {device.name}: asv run for {head[:12]} ({', '.join(models)}, {args.runs} runs "
                  f"each, asv machine {machine.name})", highlight=False)
    asvtool.register_machine(device, machine, env=env)
    asvtool.run_commit(machine, env=env)
    return [judge_model(args, device.name, model, head, env, console) for model in models]


def judge_model(args: argparse.Namespace, device: str, model: str, head: str, env: dict[str, str],
                console: Console) -> DeviceOutcome:
    """HEAD's runs of `model` against that model's nearest measured ancestor on this machine;
    measured again first when a series is in doubt."""
    history = load_history(device, model)
    previous, judgement, notes = against_ancestor(history, head, args.threshold, args.alpha)
    if judgement is not None and judgement.suspects and not args.no_confirm:
        history, judgement, more = confirm(args, device, model, previous, head, env, judgement, console)
        notes += more
    files = [Path(f) for f in history[history["commit"] == head]["file"].unique()]
    return DeviceOutcome(device, model, previous, _regressions(judgement, head), files, judgement, notes)


def write_report(files: list[Path], console: Console) -> None:
    """The per-layer HTML report is `harness report`'s (issue 6); the nightly only calls it."""
    from harness.cli import make_parser  # noqa: PLC0415 - the CLI imports this module lazily

    args = make_parser().parse_args(["report", *map(str, files)])
    args.func(args, console)


def summary_line(head: str, o: DeviceOutcome) -> str:
    """What was compared with what, how many series were judged, which moved (one model on one
    device)."""
    if o.judgement is None:
        why = o.notes[0] if o.notes else "no measured ancestor on this machine (first measurement)"
        return f"{o.label}: {head[:12]} not compared: {why}"
    j = o.judgement
    runs = {c.change.runs_after for c in j.judged}
    return (f"{o.label}: compared {head[:12]} with its nearest measured ancestor {o.previous[:12]}, "
            f"judged {len(j.judged)} build x layer series ({'/'.join(map(str, sorted(runs)))} runs), "
            f"moved: {moved_summary(j)}")


def run_nightly(args: argparse.Namespace, console: Console) -> int:
    from harness.devices import load_devices  # noqa: PLC0415

    started = time.monotonic()
    models = args.models  # checked by argparse, before anything is measured
    registry = load_devices(args.devices_file)
    devices = [registry.get(name) for name in suite.names(args.devices or registry.default)]
    head, _ = git_commit(asvtool.REPO)
    if head is None:
        raise UserError(f"{asvtool.REPO} is not a git checkout: asv files results by commit")
    outcomes = [o for device in devices for o in run_device(args, device, models, head, console)]
    asvtool.publish()
    console.print(f"nightly: asv HTML in {asvtool.REPO / 'reports' / 'asv'}", highlight=False)
    if not args.no_report:
        for device in devices:  # a page per device: its networks side by side, each with its own page
            write_report([f for o in outcomes if o.device == device.name for f in o.files], console)
    for o in outcomes:
        for note in o.notes:
            console.print(f"nightly: {o.label}: {note}", highlight=False)
        if o.previous:
            print_regressions(f"regressions on {o.device} ({o.model}) at {head[:12]} against {o.previous[:12]}",
                              o.regressions, console)
    console.print(f"nightly: done in {time.monotonic() - started:.0f} s", highlight=False)
    # one line however many devices x models: CI and cron logs are read by their last line
    console.print("nightly: " + "; ".join(summary_line(head, o) for o in outcomes), highlight=False,
                  soft_wrap=True)
    return 1 if any(o.regressions for o in outcomes) else 0

"""`harness nightly`: the asv suite on the current commit, asv's HTML, the per-layer report, and
the verdict against the nearest measured ancestor of HEAD (exit 1 on a regression).

For each device: `asv machine` (named <device>-<hardware hash>, in the repository's own asv
machine file), `asv run --environment existing --set-commit-hash HEAD` (benchmarks/ measures
through harness.nightly.suite: --runs independent runs, each stored under
results/runs/<device>/), then every build x layer of HEAD's runs judged against the runs of
the nearest ancestor of HEAD measured on the same machine (harness.history.judging: run-level
test, noise from that machine's history). Then `asv publish` (reports/asv/) and
`harness report` on this commit's result files. The last line says what was compared with
what, how many build x layer series were judged and which moved.
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
from harness.history.ancestry import nearest_measured_ancestor
from harness.history.command import print_regressions
from harness.history.judging import Judgement, judge_frames, machines, moved_summary
from harness.nightly import asvtool
from harness.results.document import git, git_commit


@dataclass(frozen=True)
class DeviceOutcome:
    device: str
    previous: str | None
    regressions: list[Regression]
    files: list[Path]
    judgement: Judgement | None = None
    notes: list[str] = field(default_factory=list)  # machine changed, software changed


def suite_env(args: argparse.Namespace, device: str) -> dict[str, str]:
    env = {"HARNESS_DEVICE": device, "HARNESS_MODEL": args.model,
           "HARNESS_REPEATS": str(args.repeats), "HARNESS_WARMUP": str(args.warmup),
           "HARNESS_RUNS": str(args.runs), "HARNESS_BUILDS": args.builds or ""}
    if args.devices_file:
        env["HARNESS_DEVICES_FILE"] = str(Path(args.devices_file).resolve())
    return env


OPTION_OF = {"HARNESS_DEVICE": "--devices", "HARNESS_MODEL": "--model", "HARNESS_REPEATS": "--repeats",
             "HARNESS_WARMUP": "--warmup", "HARNESS_RUNS": "--runs", "HARNESS_BUILDS": "--builds",
             "HARNESS_DEVICES_FILE": "--devices-file"}


def refuse_conflicting_env(wanted: dict[str, str], environ: dict[str, str] | None = None) -> None:
    """The suite reads HARNESS_* variables; the nightly sets them from its options. A variable
    already set to something else would be silently overridden: refuse it instead."""
    environ = dict(os.environ) if environ is None else environ
    for name, value in wanted.items():
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


def confirm(args: argparse.Namespace, device: str, head: str, env: dict[str, str], first: Judgement,
            console: Console) -> tuple[pd.DataFrame, str | None, Judgement | None, list[str]]:
    """Measure HEAD in a second session and judge again with both pooled, as a perf sheriff
    re-runs an alert before filing it (Chromium's Pinpoint). Asked for by any suspect series
    (Judgement.suspects), not only by a flag. Why: a whole session can be hit at once (a
    neighbour on the VM host, a clock change), moving several layers by 10-15 % where no
    run-to-run statistic can tell it from a change of the code; it does not happen twice in a
    row, while a real change holds, and the pooled side has a smaller error."""
    from harness.nightly.suite import config_from_env, measure_once  # noqa: PLC0415

    flagged, suspect = len(first.regressions), len(first.suspects)
    console.print(f"nightly: {device}: {flagged} series flagged, {suspect} suspect; measuring {head[:12]} "
                  "again to confirm", highlight=False)
    measure_once(config_from_env({**os.environ, **env}))
    history = load_history(device, args.model)
    previous, judgement, notes = against_ancestor(history, head, args.threshold, args.alpha)
    still = len(judgement.regressions) if judgement is not None else 0
    notes.append(f"confirmation: {flagged} series flagged and {suspect} suspect after one session of "
                 f"{head[:12]}, {still} flagged with a second session pooled in")
    return history, previous, judgement, notes


def _regressions(judgement: Judgement | None, head: str) -> list[Regression]:
    if judgement is None:
        return []
    return [Regression.of(j.build, j.layer, head, j.change) for j in judgement.regressions]


def run_device(args: argparse.Namespace, device, head: str, console: Console) -> DeviceOutcome:
    env = suite_env(args, device.name)
    refuse_conflicting_env(env)
    stored = load_history(device.name, args.model)
    machine = asvtool.asv_machine(device, stored["hardware_hash"].iloc[-1] if not stored.empty else None)
    console.print(f"nightly: {device.name}: asv run for {head[:12]} ({args.model}, {args.runs} runs, "
                  f"asv machine {machine.name})", highlight=False)
    asvtool.register_machine(device, machine, env=env)
    asvtool.run_commit(machine, env=env)
    history = load_history(device.name, args.model)
    previous, judgement, notes = against_ancestor(history, head, args.threshold, args.alpha)
    if judgement is not None and judgement.suspects and not args.no_confirm:
        history, previous, judgement, notes = confirm(args, device.name, head, env, judgement, console)
    files = [Path(f) for f in history[history["commit"] == head]["file"].unique()]
    return DeviceOutcome(device.name, previous, _regressions(judgement, head), files, judgement, notes)


def write_report(files: list[Path], console: Console) -> None:
    """The per-layer HTML report is `harness report`'s (issue 6); the nightly only calls it."""
    from harness.cli import make_parser  # noqa: PLC0415 - the CLI imports this module lazily

    args = make_parser().parse_args(["report", *map(str, files)])
    args.func(args, console)


def summary_line(head: str, o: DeviceOutcome) -> str:
    """What was compared with what, how many series were judged, which moved."""
    if o.judgement is None:
        why = o.notes[0] if o.notes else "no measured ancestor on this machine (first measurement)"
        return f"{o.device}: {head[:12]} not compared: {why}"
    j = o.judgement
    runs = {c.change.runs_after for c in j.judged}
    return (f"{o.device}: compared {head[:12]} with its nearest measured ancestor {o.previous[:12]}, "
            f"judged {len(j.judged)} build x layer series ({'/'.join(map(str, sorted(runs)))} runs), "
            f"moved: {moved_summary(j)}")


def run_nightly(args: argparse.Namespace, console: Console) -> int:
    from harness.devices import load_devices  # noqa: PLC0415

    started = time.monotonic()
    registry = load_devices(args.devices_file)
    names = [n.strip() for n in (args.devices or registry.default).split(",") if n.strip()]
    devices = [registry.get(name) for name in names]
    head, _ = git_commit(asvtool.REPO)
    if head is None:
        raise UserError(f"{asvtool.REPO} is not a git checkout: asv files results by commit")
    outcomes = [run_device(args, device, head, console) for device in devices]
    asvtool.publish()
    console.print(f"nightly: asv HTML in {asvtool.REPO / 'reports' / 'asv'}", highlight=False)
    if not args.no_report:
        write_report([f for o in outcomes for f in o.files], console)
    for o in outcomes:
        for note in o.notes:
            console.print(f"nightly: {o.device}: {note}", highlight=False)
        if o.previous:
            print_regressions(f"regressions on {o.device} at {head[:12]} against {o.previous[:12]}",
                              o.regressions, console)
    console.print(f"nightly: done in {time.monotonic() - started:.0f} s", highlight=False)
    console.print("nightly: " + "; ".join(summary_line(head, o) for o in outcomes), highlight=False)
    return 1 if any(o.regressions for o in outcomes) else 0

"""`harness nightly`: the asv suite on the current commit, asv's HTML, the per-layer report, and
the regressions against the previous measured commit (exit 1 when there is one).

For each device: `asv machine` (named as in devices.yaml), `asv run --environment existing
--set-commit-hash HEAD` (benchmarks/ measures through harness.nightly.suite, which also stores
the run under results/runs/<device>/), then the per build x layer comparison of this commit's
samples against the previous commit's with harness.history.compare_samples. Then `asv publish`
(reports/asv/) and `harness report` on this commit's result files.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console

from harness.errors import UserError
from harness.history import Regression, compare_samples, load_history, per_commit
from harness.history.command import print_regressions
from harness.nightly import asvtool
from harness.results.document import git_commit


@dataclass(frozen=True)
class DeviceOutcome:
    device: str
    previous: str | None
    regressions: list[Regression]
    files: list[Path]


def suite_env(args: argparse.Namespace, device: str) -> dict[str, str]:
    env = {"HARNESS_DEVICE": device, "HARNESS_MODEL": args.model,
           "HARNESS_REPEATS": str(args.repeats), "HARNESS_WARMUP": str(args.warmup)}
    if args.builds:
        env["HARNESS_BUILDS"] = args.builds
    if args.devices_file:
        env["HARNESS_DEVICES_FILE"] = str(Path(args.devices_file).resolve())
    return env


def against_previous(history: pd.DataFrame, head: str, threshold: float,
                     alpha: float) -> tuple[str | None, list[Regression]]:
    """(previous commit, regressions of `head` against it), per build x layer."""
    points = per_commit(history)
    commits = list(dict.fromkeys(points["commit"]))
    if head not in commits:
        raise UserError(f"the suite stored no result for commit {head[:12]}")
    earlier = [c for c in commits if c != head and commits.index(c) < commits.index(head)]
    if not earlier:
        return None, []
    previous = earlier[-1]
    before = {(r.build, r.layer): r.samples_ms for r in points[points["commit"] == previous].itertuples()}
    found = []
    for r in points[points["commit"] == head].itertuples():
        if (r.build, r.layer) in before:
            change = compare_samples(before[(r.build, r.layer)], r.samples_ms, threshold, alpha)
            if change.verdict == "slower":
                found.append(Regression(r.build, r.layer, head, change.before_ms, change.after_ms,
                                        change.ratio, change.p_value))
    return previous, found


def run_device(args: argparse.Namespace, device, head: str, console: Console) -> DeviceOutcome:
    env = suite_env(args, device.name)
    console.print(f"nightly: {device.name}: asv run for {head[:12]} ({args.model})", highlight=False)
    asvtool.register_machine(device, env=env)
    asvtool.run_commit(device, env=env)
    history = load_history(device.name, args.model)
    previous, found = against_previous(history, head, args.threshold, args.alpha)
    files = [Path(f) for f in history[history["commit"] == head]["file"].unique()]
    return DeviceOutcome(device.name, previous, found, files[-1:])


def write_report(files: list[Path], console: Console) -> None:
    """The per-layer HTML report is `harness report`'s (issue 6); the nightly only calls it."""
    from harness.cli import make_parser  # noqa: PLC0415 - the CLI imports this module lazily

    args = make_parser().parse_args(["report", *map(str, files)])
    args.func(args, console)


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
        against = o.previous[:12] if o.previous else "nothing (first measured commit)"
        print_regressions(f"regressions on {o.device} at {head[:12]} against {against}",
                          o.regressions, console)
    console.print(f"nightly: done in {time.monotonic() - started:.0f} s", highlight=False)
    return 1 if any(o.regressions for o in outcomes) else 0

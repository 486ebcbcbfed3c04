"""The `harness` command line. Each subcommand is a small function taking parsed args.

Bad input of any kind (arguments, devices.yaml, result files, hosts) surfaces as one line on
stderr and exit code 2; tracebacks are for bugs only.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from rich.console import Console

from harness.errors import UserError
from harness.history.command import whole_number
from harness.report.command import add_arguments as report_arguments
from harness.terminal import error_line, make_console

Command = Callable[[argparse.Namespace, Console], int]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus exit 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


_positive_int = whole_number(0)  # whole numbers >= 0: the same parser as harness nightly's options


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _name_list(text: str) -> list[str]:
    return [b.strip() for b in text.split(",") if b.strip()]


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from harness.builds import build_names, check_build_names  # noqa: PLC0415 - keep --help fast
    from harness.devices import load_devices  # noqa: PLC0415
    from harness.model import get_model  # noqa: PLC0415
    from harness.results.store import check_writable  # noqa: PLC0415
    from harness.runner.measure import Settings  # noqa: PLC0415
    from harness.session import run_on_device, run_on_devices  # noqa: PLC0415

    registry = load_devices(args.devices_file)
    devices = [registry.get(name) for name in (args.device or [None])]
    table = get_model(args.model)
    builds = check_build_names(args.builds or build_names())
    if args.repeats < 1:
        raise UserError("--repeats must be at least 1")
    settings = Settings(warmup=args.warmup, repeats=args.repeats)
    if args.output and len(devices) > 1:
        raise UserError("--output names one file; with several devices each result goes to its default path")
    if args.output:
        check_writable(args.output)
    if args.runs > 1:
        return _several_runs(args, devices, builds, console)
    if args.commit:
        return _runs_of_commit(args, devices, builds, console)
    if len(devices) == 1:
        return _report_run(run_on_device(devices[0], table, builds, settings, console), args.output, console)
    codes = []
    for device, outcome in zip(devices, run_on_devices(devices, table, builds, settings, console)):
        if isinstance(outcome, UserError):
            error_line(make_console(stderr=True), str(outcome))
            codes.append(outcome.exit_code)
        else:
            codes.append(_report_run(outcome, None, console))
    return max(codes)


def _several_runs(args: argparse.Namespace, devices: list, builds: list[str], console: Console) -> int:
    """`--runs N`: N runs in separate processes, builds in varying order, one file each."""
    from harness.runs import measure_runs  # noqa: PLC0415

    if len(devices) != 1 or args.output:
        raise UserError("--runs N measures one device into default result paths (no --output)")
    if args.commit:
        return _runs_of_commit(args, devices, builds, console)
    paths = measure_runs(_plan(args, devices[0], builds), progress=lambda i, n, order: console.print(
        f"run {i + 1} of {n}: {', '.join(order)}", highlight=False))
    for path in paths:
        console.print(f"result written to {path}", highlight=False)
    return 0


def _plan(args: argparse.Namespace, device, builds: list[str]):
    from harness.runs import RunPlan  # noqa: PLC0415

    return RunPlan(device.name, args.model, builds, args.warmup, args.repeats, args.runs,
                   args.devices_file)


def _runs_of_commit(args: argparse.Namespace, devices: list, builds: list[str], console: Console) -> int:
    """`--commit REV`: that commit's code, in a temporary worktree, today's environment."""
    from harness.commits import measure_commit  # noqa: PLC0415
    from harness.report.inputs import resolve_commit  # noqa: PLC0415

    if len(devices) != 1 or args.output:
        raise UserError("--commit REV measures one device into default result paths (no --output)")
    commit = resolve_commit(args.commit)
    for path in measure_commit(_plan(args, devices[0], builds), devices[0], commit):
        console.print(f"result written to {path}", highlight=False)
    return 0


def _report_run(doc: dict, output: Path | None, console: Console) -> int:
    """Save one device's result, print its table; 1 if every build failed."""
    from harness.report.table import print_run  # noqa: PLC0415
    from harness.results.store import save_new_result, save_result  # noqa: PLC0415

    path = save_result(doc, output) if output else save_new_result(doc)
    print_run(doc, console)
    console.print(f"result written to {path}")
    failed = [b["name"] for b in doc["builds"] if b["status"] != "ok"]
    return 1 if failed and len(failed) == len(doc["builds"]) else 0


def cmd_tune(args: argparse.Namespace, console: Console) -> int:
    from harness.devices import load_devices  # noqa: PLC0415
    from harness.model import get_model  # noqa: PLC0415
    from harness.tuning.command import TUNABLE, tune  # noqa: PLC0415
    from harness.tuning.search import Budget  # noqa: PLC0415

    device = load_devices(args.devices_file).get(args.device)
    budget = Budget.of(args.trials, args.minutes)
    root = {"root": args.tuning_dir} if args.tuning_dir else {}
    tune(device, get_model(args.model), args.builds or list(TUNABLE), budget, console, restart=args.restart,
         candidate_timeout_s=args.candidate_timeout, layers=args.layers, **root)
    return 0


def cmd_devices_list(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table  # noqa: PLC0415

    from harness.devices import load_devices  # noqa: PLC0415

    registry = load_devices(args.devices_file)
    table = Table(title=f"devices in {registry.path}", title_justify="left")
    for col in ("name", "transport", "where", "arch", "cpu", "cores", "GHz", "peak fp32", "peak fp16", "peak int8 GOP/s"):
        table.add_column(col, justify="right" if col in ("cores", "GHz") or col.startswith("peak") else "left")
    for d in registry.devices.values():
        where = {"local": "this host", "ssh": f"{d.user + '@' if d.user else ''}{d.host}{f':{d.port}' if d.port else ''}",
                 "rpc": f"tracker {d.tracker.host}:{d.tracker.port} key {d.tracker.key}" if d.tracker else ""}[d.transport]
        peak = d.peak_gflops
        table.add_row(d.name + (" (default)" if d.name == registry.default else ""), d.transport, where,
                      d.arch, d.cpu or d.cpu_model, str(d.cores), f"{d.freq_ghz:.2f}",
                      f"{peak['fp32']:.1f}", f"{peak['fp16']:.1f}", f"{peak['int8']:.1f}")
    console.print(table)
    return 0


def cmd_nightly(args: argparse.Namespace, console: Console) -> int:
    from harness.nightly.nightly import run_nightly  # noqa: PLC0415

    return run_nightly(args, console)


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from harness.history.command import run_compare  # noqa: PLC0415

    return run_compare(args, console)


def cmd_regressions(args: argparse.Namespace, console: Console) -> int:
    from harness.history.command import run_regressions  # noqa: PLC0415

    return run_regressions(args, console)


def _commit_plan(args: argparse.Namespace, builds: list[str]):
    from harness.devices import load_devices  # noqa: PLC0415
    from harness.runs import RunPlan  # noqa: PLC0415

    device = load_devices(args.devices_file).get(args.device)
    return device, RunPlan(device.name, args.model, builds, args.warmup, args.repeats, args.runs,
                           args.devices_file)


def cmd_backfill(args: argparse.Namespace, console: Console) -> int:
    from harness.builds import build_names, check_build_names  # noqa: PLC0415
    from harness.commits import backfill  # noqa: PLC0415

    device, plan = _commit_plan(args, check_build_names(args.builds or build_names()))
    commits = backfill(plan, device, args.range, lambda line: console.print(line, highlight=False))
    console.print(f"backfill: {len(commits)} commits of {args.range} measured on {device.name}", highlight=False)
    return 0


def cmd_bisect(args: argparse.Namespace, console: Console) -> int:
    from harness.builds import check_build_names  # noqa: PLC0415
    from harness.commits import bisect  # noqa: PLC0415
    from harness.results.document import git  # noqa: PLC0415

    device, plan = _commit_plan(args, check_build_names([args.build]))
    first = bisect(plan, device, args.good, args.bad, args.build, args.layer,
                   lambda line: console.print(f"bisect: {line}", highlight=False),
                   threshold=args.threshold, alpha=args.alpha)
    subject = git("log", "-1", "--format=%s", first) or ""
    console.print(f"bisect: first slower commit for {args.build} {args.layer}: {first} {subject}", highlight=False)
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from harness.report.command import run_report  # noqa: PLC0415

    return run_report(args, console)


def cmd_devices_check(args: argparse.Namespace, console: Console) -> int:
    from harness.devices import load_devices  # noqa: PLC0415
    from harness.devices.check import run_check  # noqa: PLC0415

    run_check(load_devices(args.devices_file).get(args.name), console)
    return 0


def cmd_devices_setup(args: argparse.Namespace, console: Console) -> int:
    from harness.devices import load_devices  # noqa: PLC0415
    from harness.devices.check import run_check  # noqa: PLC0415
    from harness.devices.setup import run_setup  # noqa: PLC0415

    device = load_devices(args.devices_file).get(args.name)
    run_setup(device, args.packages, console, with_torch=not args.no_torch)
    run_check(device, console)
    return 0


def cmd_devices_emulate(args: argparse.Namespace, console: Console) -> int:
    from harness.devices.emulate import run_emulate  # noqa: PLC0415

    run_emulate(args.cpu, not args.no_torch, args.port, args.dir, args.stop,
                lambda line: console.print(line, highlight=False, markup=False), args.board)
    return 0


def make_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--devices-file", type=Path, default=None, metavar="PATH",
                        help="devices file (default: devices.yaml at the repository root)")
    parser = _Parser(prog="harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", parents=[common], help="measure builds per layer on a device")
    run.add_argument("--device", type=_name_list, default=None, metavar="NAME[,NAME]",
                     help="device(s) from devices.yaml (default: the file's default, local); several "
                          "remote devices are measured in parallel, the local one after them")
    run.add_argument("--model", default="unet",
                     help="model preset: unet (default), unet-tiny, resnet18, mobilenet-v2, squeezenet1.1, "
                          "shufflenet-v2, and each of the last four as NAME-small (README, Models)")
    run.add_argument("--builds", type=_name_list, default=None, metavar="A,B",
                     help="comma-separated builds (default: every build)")
    run.add_argument("--output", type=Path, default=None, metavar="PATH",
                     help="result file (default: results/runs/<device>/<time>_<commit>_<model>.json)")
    run.add_argument("--warmup", type=_positive_int, default=2, help="warm-up passes per build (default 2)")
    run.add_argument("--repeats", type=_positive_int, default=10, help="timed passes per build (default 10)")
    run.add_argument("--runs", type=_positive_int, default=1,
                     help="independent runs, each a separate process with the builds in a different "
                          "order, each its own result file (default 1; verdicts judge runs, not samples)")
    run.add_argument("--commit", default=None, metavar="REV",
                     help="measure that commit's code in a temporary git worktree, with this environment")
    run.set_defaults(func=cmd_run)

    tune = sub.add_parser("tune", parents=[common], help="search kernels for the TVM builds; resumable")
    tune.add_argument("--device", default=None, help="device name from devices.yaml (default: local)")
    tune.add_argument("--model", default="unet", help="model whose conv workloads to tune (default: unet)")
    tune.add_argument("--builds", type=_name_list, default=None, metavar="A,B",
                      help="tvm, tvm-nnpack, fp16-winograd (default: all three)")
    budget = tune.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="stop starting candidates after M minutes")
    budget.add_argument("--trials", type=_positive_int, default=None,
                        help="at most N candidates per workload, counting earlier runs")
    tune.add_argument("--candidate-timeout", type=_positive_float, default=None, metavar="S",
                      help="ssh and rpc devices: a candidate not done on the board after S seconds is "
                           "recorded as timed out and the search goes on (default 300)")
    tune.add_argument("--layers", type=_name_list, default=None, metavar="ID,ID",
                      help="tune only these conv layers' workloads (default: every conv of the model)")
    tune.add_argument("--restart", action="store_true",
                      help="forget these workloads' earlier measurements and search again")
    tune.add_argument("--tuning-dir", type=Path, default=None, metavar="DIR",
                      help="where the databases go, DIR/<device>/<cpu-key>/ (default: tuning/)")
    tune.set_defaults(func=cmd_tune)

    devices = sub.add_parser("devices", help="inspect devices")
    dsub = devices.add_subparsers(dest="devices_command", required=True, parser_class=_Parser)
    dlist = dsub.add_parser("list", parents=[common], help="list devices with their peaks")
    dlist.set_defaults(func=cmd_devices_list)
    dcheck = dsub.add_parser("check", parents=[common], help="reachability, CPU, frequency, temperature, packages")
    dcheck.add_argument("name", help="device name from devices.yaml")
    dcheck.set_defaults(func=cmd_devices_check)
    dsetup = dsub.add_parser("setup", parents=[common], help="create the remote workdir and venv, install packages")
    dsetup.add_argument("name", help="device name from devices.yaml")
    dsetup.add_argument("--packages", type=_name_list, default=None, metavar="A,B",
                        help="pip requirements to install (default: by the device's arch; '' for none)")
    dsetup.add_argument("--no-torch", action="store_true",
                        help="leave PyTorch out (the TVM builds and the farm need only numpy and the TVM runtime)")
    dsetup.set_defaults(func=cmd_devices_setup)

    demu = dsub.add_parser("emulate", help="build (once) and serve an emulated Raspberry Pi over a loopback sshd")
    demu.add_argument("--cpu", default="cortex-a76",
                      help="cortex-a76 (Raspberry Pi 5, default) or cortex-a72 (Raspberry Pi 4)")
    demu.add_argument("--board", default=None, metavar="KIND",
                      help="pi3-armv7: a Raspberry Pi 3B on a 32-bit OS (qemu-arm, no torch; needs the runtime "
                           "from scripts/build-armv7-runtime.sh). Default: the aarch64 board --cpu picks")
    demu.add_argument("--no-torch", action="store_true", help="a board without PyTorch (numpy + TVM runtime only)")
    demu.add_argument("--port", type=_positive_int, default=None, help="sshd port on 127.0.0.1 (default: a free one)")
    demu.add_argument("--dir", type=Path, default=None, help="where boards are cached (default: .board/)")
    demu.add_argument("--stop", action="store_true", help="stop the board's sshd")
    demu.set_defaults(func=cmd_devices_emulate)

    report = sub.add_parser("report", help="write an HTML report of result files, a commit range or a comparison")
    report_arguments(report)
    report.set_defaults(func=cmd_report)

    from harness.history.command import add_compare_arguments, add_regressions_arguments  # noqa: PLC0415
    from harness.nightly.command import add_arguments as nightly_arguments  # noqa: PLC0415

    nightly = sub.add_parser("nightly", parents=[common], help="asv suite on this commit, asv HTML, report, regressions (exit 1)")
    nightly_arguments(nightly)
    nightly.set_defaults(func=cmd_nightly)
    compare = sub.add_parser("compare", parents=[common], help="per-layer speedups between two commits/result files or two builds")
    add_compare_arguments(compare)
    compare.set_defaults(func=cmd_compare)
    regressions = sub.add_parser("regressions", parents=[common], help="open regressions over the whole stored history")
    add_regressions_arguments(regressions)
    regressions.set_defaults(func=cmd_regressions)

    from harness.history.command import add_significance_arguments  # noqa: PLC0415

    def measuring(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default=None, help="device from devices.yaml (default: its default)")
        p.add_argument("--model", default="unet", help="model preset (default unet)")
        from harness.runs import DEFAULT_REPEATS, DEFAULT_RUNS  # noqa: PLC0415

        p.add_argument("--runs", type=_positive_int, default=DEFAULT_RUNS,
                       help=f"independent runs per commit (default {DEFAULT_RUNS})")
        p.add_argument("--warmup", type=_positive_int, default=2, help="warm-up passes per build (default 2)")
        p.add_argument("--repeats", type=_positive_int, default=DEFAULT_REPEATS,
                       help=f"timed passes per build (default {DEFAULT_REPEATS})")

    back = sub.add_parser("backfill", parents=[common], help="measure every commit of A..B not yet measured here")
    back.add_argument("range", metavar="A..B")
    back.add_argument("--builds", type=_name_list, default=None, metavar="A,B", help="builds (default: all)")
    measuring(back)
    back.set_defaults(func=cmd_backfill)
    bis = sub.add_parser("bisect", parents=[common], help="the first commit of GOOD..BAD where a layer got slower")
    bis.add_argument("good")
    bis.add_argument("bad")
    bis.add_argument("--build", required=True)
    bis.add_argument("--layer", required=True, help="layer id, as in the per-layer table (enc1.conv2, ...)")
    measuring(bis)
    add_significance_arguments(bis)
    bis.set_defaults(func=cmd_bisect)
    return parser


class _StderrNotice(logging.Handler):
    """The library's notices (logger `harness`: a host key trusted on first use, stale run
    folders removed) as one `harness: ...` line each on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"harness: {record.getMessage()}", file=sys.stderr, flush=True)


def _show_notices() -> None:
    logger = logging.getLogger("harness")
    if not any(isinstance(h, _StderrNotice) for h in logger.handlers):  # main() may run twice in a process
        logger.addHandler(_StderrNotice())
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    console = make_console()
    err = make_console(stderr=True)
    _show_notices()
    try:
        args = make_parser().parse_args(argv)
        return args.func(args, console)
    except UserError as exc:
        error_line(err, str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("harness: interrupted; nothing was written for the unfinished run")
        return 130

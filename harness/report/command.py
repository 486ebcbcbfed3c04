"""`harness report`: its arguments and its body (harness/cli.py only wires it in).

    harness report RESULT [RESULT ...]            one page for these result files
    harness report --commits A..B                 the page of B's results, history from A to B
    harness report --compare A B                  A and B: commits or result files
    harness report RESULT... --compare tvm caffe2-nnpack    two builds within the files
    harness report --commits A..B --models unet,mobilenet-v2    networks side by side

Result files of several networks (one device) give a page listing the networks side by side,
with each network's own page beside it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from harness.errors import UserError
from harness.history.command import model_list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="*", type=Path, metavar="RESULT",
                        help="result files (one device and model); builds in several files are merged")
    parser.add_argument("--commits", metavar="A..B", default=None,
                        help="report on stored results of a commit range (A included)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                        help="compare two commits or result files, or two builds of the RESULT files")
    parser.add_argument("--baseline", default=None, metavar="BUILD",
                        help="build the speedups are against (default caffe2-nnpack)")
    parser.add_argument("--device", default=None, help="device of the stored results to use (with --commits/--compare)")
    parser.add_argument("--models", "--model", dest="models", type=model_list, default=None, metavar="A,B",
                        help="models of the stored results to use (with --commits/--compare; default: the "
                             "one the results are of); several are listed side by side")
    parser.add_argument("--results-root", type=Path, default=None, metavar="DIR",
                        help="where stored results are (default: results/)")
    parser.add_argument("--output-dir", type=Path, default=None, metavar="DIR",
                        help="where pages go, as DIR/<device>/<name>/index.html (default: reports/)")
    parser.add_argument("--name", default=None, help="page name (default: the commit, or A..B, or compare-A-vs-B)")
    parser.add_argument("--screenshot", type=Path, default=None, metavar="PNG",
                        help="also save a screenshot of the page (headless Chromium)")


def _compare(args: argparse.Namespace, root: Path, out: Path) -> list[Path]:
    from harness.report.inputs import side  # noqa: PLC0415 - keep `harness --help` fast
    from harness.report.pages import write_compare_report  # noqa: PLC0415

    a, b = args.compare
    if args.results and not Path(a).is_file() and not Path(b).is_file():
        return [write_compare_report(a, args.results, b, args.results, out, builds=True, name=args.name)]
    if args.results:
        raise UserError("--compare with RESULT files compares two builds of them; give build names")
    models = args.models or [None]
    pages = []
    for model in models:
        a_label, a_paths = side(a, root, args.device, model)
        b_label, b_paths = side(b, root, args.device, model)
        name = args.name or f"compare-{a_label}-vs-{b_label}"
        pages.append(write_compare_report(a_label, a_paths, b_label, b_paths, out,
                                          name=f"{name}-{model}" if len(models) > 1 else name))
    return pages


def _commit_range(args: argparse.Namespace, root: Path, out: Path) -> Path:
    from harness.report.inputs import newest_commit, results_in_range  # noqa: PLC0415
    from harness.report.pages import write_report  # noqa: PLC0415

    files, history, commits = [], [], []
    for model in args.models or [None]:
        found = results_in_range(args.commits, root, args.device, model)
        commits += [f.commit or "" for f in found]
        history += [f.commit for f in found if f.commit]
        files += newest_commit(found)
    name = args.name or f"{commits[0][:12]}..{commits[-1][:12]}"
    return write_report(files, out, name=name, results_root=root,
                        history_commits=list(dict.fromkeys(history)), **_baseline(args))


def _baseline(args: argparse.Namespace) -> dict[str, str]:
    return {"baseline": args.baseline} if args.baseline else {}


def run_report(args: argparse.Namespace, console: Console) -> int:
    from harness.report.pages import REPORTS_DIR, write_report  # noqa: PLC0415
    from harness.results.store import RESULTS_DIR  # noqa: PLC0415

    root = args.results_root or RESULTS_DIR
    out = args.output_dir or REPORTS_DIR
    if args.commits and (args.results or args.compare):
        raise UserError("--commits takes no RESULT files and no --compare")
    if args.models and args.results:
        raise UserError("--models selects stored results (with --commits/--compare); RESULT files name their own")
    if args.compare:
        pages = _compare(args, root, out)
    elif args.commits:
        pages = [_commit_range(args, root, out)]
    elif args.results:
        pages = [write_report(args.results, out, name=args.name, results_root=root, **_baseline(args))]
    else:
        raise UserError("give result files, --commits A..B or --compare A B")
    for page in pages:
        console.print(f"report written to {page}", highlight=False)
    if args.screenshot:
        from harness.report.browser import screenshot  # noqa: PLC0415

        console.print(f"screenshot written to {screenshot(pages[0], args.screenshot)}", highlight=False)
    return 0

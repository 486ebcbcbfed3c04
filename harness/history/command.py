"""`harness compare` and `harness regressions`: arguments and bodies (cli.py wires them in)."""
from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.console import Console
from rich.table import Table as RichTable

from harness.errors import UserError

if TYPE_CHECKING:
    import pandas as pd


def _number(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value < high:
            raise argparse.ArgumentTypeError(f"expected a number in [{low:g}, {high:g}), got {value:g}")
        return value
    return parse


def whole_number(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {value}")
        return value
    return parse


def add_significance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=_number(0, math.inf), default=0.05, metavar="F",
                        help="smallest relative change of a median that counts (default 0.05 = 5%%)")
    parser.add_argument("--alpha", type=_number(0, 1), default=0.01, metavar="P",
                        help="false-alarm rate of one comparison, split over the build x layer series it "
                             "judges (default 0.01)")


def model_list(text: str) -> list[str]:
    """--models a,b as an argparse type: known presets, each once, in the order given."""
    from harness.model import model_names  # noqa: PLC0415 - keep `--help` light

    try:
        return model_names(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_selection_arguments(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """many: --models a,b (each network judged on its own), with --model as its one-name form."""
    parser.add_argument("--device", default=None, help="device of the stored results (default: devices.yaml's default)")
    if many:
        parser.add_argument("--models", "--model", dest="models", type=model_list, default=None, metavar="A,B",
                            help="models of the stored results, each compared on its own (default: the one "
                                 "the results are of)")
    else:
        parser.add_argument("--model", default=None, help="model of the stored results (default: unet)")
    parser.add_argument("--results-root", type=Path, default=None, metavar="DIR",
                        help="where stored results are (default: results/)")


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sides", nargs="+", metavar="COMMIT_OR_FILE",
                        help="two commits or result files; one with --builds")
    parser.add_argument("--builds", nargs=2, metavar=("X", "Y"), default=None,
                        help="compare build Y against build X within one commit or result file")
    parser.add_argument("--format", choices=("markdown", "html"), default="markdown")
    parser.add_argument("--output", type=Path, default=None, metavar="PATH",
                        help="write the table here instead of standard output")
    parser.add_argument("--exit-zero", action="store_true",
                        help="exit 0 even when a layer is slower (default: exit 1 on a regression)")
    add_selection_arguments(parser, many=True)
    add_significance_arguments(parser)


def _history_of(paths: list[Path], root: Path) -> pd.DataFrame:
    """The stored history of the device and model the first result is of (the noise estimate)."""
    from harness.history import load_history  # noqa: PLC0415
    from harness.results.store import load_result  # noqa: PLC0415

    doc = load_result(paths[0])
    return load_history(doc["device"]["name"], doc["model"]["name"], root)


def ancestry_note(a_text: str, b_text: str) -> str | None:
    """A line when A is not an ancestor of B (both commits git knows): compared, but said."""
    from harness.history.ancestry import is_ancestor  # noqa: PLC0415
    from harness.report.inputs import resolve_commit  # noqa: PLC0415

    if Path(a_text).is_file() or Path(b_text).is_file():
        return None
    a, b = resolve_commit(a_text), resolve_commit(b_text)
    if is_ancestor(a, b) is False:
        return f"note: {a_text} ({a[:12]}) is not an ancestor of {b_text} ({b[:12]}): compared anyway"
    return None


def run_compare(args: argparse.Namespace, console: Console) -> int:
    from harness.history.compare import compare_builds, compare_runs, to_html, to_markdown  # noqa: PLC0415
    from harness.report.inputs import side  # noqa: PLC0415 - commit-or-file, shared with `harness report`
    from harness.fileio import write_atomic  # noqa: PLC0415
    from harness.results.store import RESULTS_DIR  # noqa: PLC0415

    root = args.results_root or RESULTS_DIR
    if args.builds and len(args.sides) != 1:
        raise UserError("--builds X Y compares two builds within ONE commit or result file")
    if not args.builds and len(args.sides) != 2:
        raise UserError("give two commits or result files (or one with --builds X Y)")
    models = args.models or [None]
    if len(models) > 1 and any(Path(text).is_file() for text in args.sides):
        raise UserError("--models selects stored results of commits; a result file is of one model already")
    tables = []
    for model in models:
        sides = [side(text, root, args.device, model) for text in args.sides]
        if args.builds:
            table = compare_builds(*sides[0], *args.builds, threshold=args.threshold, alpha=args.alpha)
        else:
            table = compare_runs(*sides[0], *sides[1], threshold=args.threshold, alpha=args.alpha,
                                 history=_history_of(sides[1][1], root), note=ancestry_note(*args.sides))
        tables.append(replace(table, model=model) if len(models) > 1 else table)
    text = to_html(tables) if args.format == "html" else "\n".join(map(to_markdown, tables))
    if args.output:
        write_atomic(args.output, text)
        console.print(f"comparison written to {args.output}", highlight=False)
        for table in tables:
            if table.note:
                console.print(f"{table.model}: {table.note}" if table.model else table.note, highlight=False)
    else:
        console.out(text, highlight=False)
    # CI: a regression fails the step unless asked not to (a report-only job)
    return 1 if any(t.regressions for t in tables) and not args.exit_zero else 0


def add_regressions_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection_arguments(parser)
    add_significance_arguments(parser)


def print_regressions(title: str, rows: list, console: Console) -> None:
    """rows: Regression records (or anything with their fields)."""
    if not rows:
        console.print(f"{title}: none", highlight=False)
        return
    table = RichTable(title=title, title_justify="left")
    for col in ("build", "layer", "commit", "before ms", "after ms", "slower by", "95% CI", "noise band", "p"):
        table.add_column(col, justify="left" if col in ("build", "layer", "commit") else "right")
    for r in rows:
        table.add_row(r.build, r.layer, r.commit[:12], f"{r.before_ms:.4g}", f"{r.after_ms:.4g}",
                      f"{(r.ratio - 1) * 100:+.1f}%",
                      f"{(r.ci_low - 1) * 100:+.1f}% .. {(r.ci_high - 1) * 100:+.1f}%",
                      f"±{r.band * 100:.1f}%", f"{r.p_value:.2g}")
    console.print(table)


def run_regressions(args: argparse.Namespace, console: Console) -> int:
    from harness.devices import load_devices  # noqa: PLC0415
    from harness.history import detect_regressions, load_history  # noqa: PLC0415
    from harness.model import DEFAULT_MODEL  # noqa: PLC0415
    from harness.results.store import RESULTS_DIR  # noqa: PLC0415

    device = args.device or load_devices(args.devices_file).default
    model = args.model or DEFAULT_MODEL
    history = load_history(device, model, args.results_root or RESULTS_DIR)
    if history.empty:
        raise UserError(f"no stored results for device {device}, model {model}")
    found = detect_regressions(history, args.threshold, args.alpha)
    commits = history["commit"].nunique()
    print_regressions(f"open regressions on {device}, {model} ({commits} commits)", found, console)
    return 0

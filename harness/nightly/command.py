"""`harness nightly`'s arguments (light to import: the CLI builds every parser for --help)."""
from __future__ import annotations

import argparse

from harness.history.command import add_significance_arguments, model_list, whole_number
from harness.model import DEFAULT_MODEL
from harness.runs import DEFAULT_CONFIRM_RUNS, DEFAULT_REPEATS, DEFAULT_RUNS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", default=None, metavar="A,B",
                        help="devices to run on (default: devices.yaml's default)")
    parser.add_argument("--models", "--model", dest="models", type=model_list, default=[DEFAULT_MODEL], metavar="A,B",
                        help="model presets, each judged on its own history (default unet; "
                             "--model is the older spelling)")
    parser.add_argument("--builds", default=None, metavar="A,B", help="builds (default: every registered build)")
    parser.add_argument("--repeats", type=whole_number(1), default=DEFAULT_REPEATS,
                        help=f"timed passes per build (default {DEFAULT_REPEATS})")
    parser.add_argument("--warmup", type=whole_number(0), default=2, help="warm-up passes per build (default 2)")
    parser.add_argument("--runs", type=whole_number(1), default=DEFAULT_RUNS,
                        help=f"independent runs per commit, each a separate process (default {DEFAULT_RUNS}); "
                             "verdicts judge runs, not samples")
    parser.add_argument("--no-report", action="store_true", help="skip the per-layer HTML report")
    parser.add_argument("--no-confirm", action="store_true",
                        help="report a flag from one session as it is (default: measure HEAD again beside "
                             "its ancestor, interleaved, and judge the suspect series on that session)")
    parser.add_argument("--confirm-runs", type=whole_number(1), default=DEFAULT_CONFIRM_RUNS, metavar="N",
                        help=f"runs a side of that confirmation, of the suspects' builds only "
                             f"(default {DEFAULT_CONFIRM_RUNS})")
    add_significance_arguments(parser)

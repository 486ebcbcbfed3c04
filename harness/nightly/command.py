"""`harness nightly`'s arguments (light to import: the CLI builds every parser for --help)."""
from __future__ import annotations

import argparse

from harness.history.command import add_significance_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", default=None, metavar="A,B",
                        help="devices to run on (default: devices.yaml's default)")
    parser.add_argument("--model", default="unet", help="model preset (default unet)")
    parser.add_argument("--builds", default=None, metavar="A,B", help="builds (default: every registered build)")
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per build (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up passes per build (default 2)")
    parser.add_argument("--runs", type=int, default=3,
                        help="independent runs per commit, each a separate process (default 3); "
                             "verdicts judge runs, not samples")
    parser.add_argument("--no-report", action="store_true", help="skip the per-layer HTML report")
    add_significance_arguments(parser)

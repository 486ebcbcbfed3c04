"""The harness's terminal output: one place that makes rich Consoles, with markup off.

Device names, build messages, paths and notes come from users' files and from devices. With
rich's markup on, a name like `[/oops]` is read as a closing tag (a MarkupError traceback)
and `[bold]` would restyle the line. So no console of the harness interprets markup: colour is
given with `style=`, never inside the text, and everything prints as written.
"""
from __future__ import annotations

import sys
import unicodedata
from typing import IO, Any

from rich.console import Console
from rich.text import Text


def make_console(stderr: bool = False, file: IO[str] | None = None, **kwargs: Any) -> Console:
    """A Console that prints text as written (no markup, no syntax highlighting)."""
    if file is None and not stderr and "width" not in kwargs:
        # Off a terminal (CI logs, pipes) nothing limits the width: keep tables unwrapped.
        kwargs["width"] = None if sys.stdout.isatty() else 400
    return Console(stderr=stderr, file=file, markup=False, highlight=False, **kwargs)


def labelled(label: str, style: str, text: str) -> Text:
    """`label text` with only the label coloured; `text` is shown exactly as given."""
    return Text.assemble((label, style), " ", text)


def warn(console: Console, text: str) -> None:
    console.print(labelled("warning:", "yellow", text), soft_wrap=True)


def one_line(text: str) -> str:
    """`text` with control characters shown as escapes (\\n, \\x1b): an argument or a file name
    holding a newline or a terminal escape sequence cannot split or restyle the line."""
    return "".join(repr(ch)[1:-1] if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
                   for ch in text)


def error_line(console: Console, text: str) -> None:
    """The one line a user error is reported as (stderr console)."""
    console.print(f"harness: error: {one_line(text)}", soft_wrap=True)

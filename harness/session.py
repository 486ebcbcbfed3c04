"""Run a measurement on a device through its transport, with progress, into a result document."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.devices.config import Device
from harness.errors import UserError
from harness.model.layers import LayerTable
from harness.results.document import new_document
from harness.runner.measure import Settings
from harness.runner.run import RunRequest, run


def progress_display(console: Console) -> Progress:
    return Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[phase]}"), TimeElapsedColumn(), console=console,
                    transient=False, disable=not console.is_terminal and console.quiet)


class ProgressSink:
    """Adapts the runner's progress(build, phase, done, total) calls to rich bars."""

    def __init__(self, bars: Progress):
        self.bars, self.tasks = bars, {}

    def __call__(self, build: str, phase: str, done: int, total: int) -> None:
        if build not in self.tasks:
            self.tasks[build] = self.bars.add_task(build, total=total or None, phase=phase)
        task = self.tasks[build]
        if phase in ("ok", "failed"):
            self.bars.update(task, phase=phase)
            self.bars.stop_task(task)
        else:
            self.bars.update(task, completed=done, total=total or None, phase=phase)


def run_on_device(device: Device, table: LayerTable, builds: list[str], settings: Settings,
                  console: Console, options: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    if device.transport != "local":
        raise UserError(f"device {device.name!r}: transport {device.transport!r} is not supported yet")
    request = RunRequest(table, device, builds, settings, options or {})
    with progress_display(console) as bars:
        output = run(request, ProgressSink(bars))
    return new_document(device, table, output)

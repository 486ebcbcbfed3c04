"""Run a measurement on a device through its transport, with progress, into a result document."""
from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.devices.config import Device
from harness.devices.state import run_flags
from harness.errors import UserError
from harness.model.layers import LayerTable
from harness.report.peak_check import peak_warnings
from harness.results.document import new_document
from harness.runner.measure import Settings
from harness.runner.request import request_to_json
from harness.runner.run import RunRequest, run


def progress_display(console: Console) -> Progress:
    # markup=False: descriptions hold device and build names, which are printed as written.
    return Progress(TextColumn("{task.description:<24}", markup=False), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[phase]}", markup=False), TimeElapsedColumn(), console=console,
                    transient=False, disable=not console.is_terminal and console.quiet)


class ProgressSink:
    """Adapts the runner's progress(build, phase, done, total) calls to rich bars."""

    def __init__(self, bars: Progress, label: str = ""):
        self.bars, self.tasks, self.label = bars, {}, label

    def __call__(self, build: str, phase: str, done: int, total: int) -> None:
        if build not in self.tasks:
            self.tasks[build] = self.bars.add_task(f"{self.label}{build}", total=total or None, phase=phase)
        task = self.tasks[build]
        if phase in ("ok", "failed"):
            self.bars.update(task, phase=phase)
            self.bars.stop_task(task)
        else:
            self.bars.update(task, completed=done, total=total or None, phase=phase)


def run_local(device: Device, table: LayerTable, builds: list[str], settings: Settings,
              options: dict[str, dict[str, Any]], progress: Callable[[str, str, int, int], None]) -> dict[str, Any]:
    """Each build in a process of its own, as on a remote device: a build's threads, heap and
    process environment (builds.PROCESS_ENV) are never another build's."""
    with tempfile.TemporaryDirectory(prefix="harness-local-") as tmp:
        request = Path(tmp) / "request.json"
        request.write_text(json.dumps(request_to_json(table.config.name, device, builds, settings, options, None)))
        return run(RunRequest(table, device, builds, settings, options), progress, request_file=request)


def transport_runner(device: Device) -> Callable[..., dict[str, Any]]:
    """The function that runs on the device's transport; all take the same arguments."""
    if device.transport == "ssh":
        from harness.deploy.ssh_run import run_over_ssh  # noqa: PLC0415 - paramiko only when needed
        return run_over_ssh
    if device.transport == "rpc":
        from harness.farm.client import run_on_farm  # noqa: PLC0415 - tvm only when needed
        return run_on_farm
    if device.transport == "local":
        return run_local
    raise UserError(f"device {device.name!r}: transport {device.transport!r} is not supported")


def measure_on(device: Device, table: LayerTable, builds: list[str], settings: Settings, bars: Progress,
               options: dict[str, dict[str, Any]] | None = None, label: str = "") -> dict[str, Any]:
    """A complete result document, or a UserError (then nothing was measured to keep): a remote
    run that breaks part-way raises rather than returning part of a result."""
    output = transport_runner(device)(device, table, builds, settings, options or {}, ProgressSink(bars, label))
    doc = new_document(device, table, output)
    # The state was collected on the device itself (the runner runs there), before and after.
    doc.update(run_flags(doc["system"]["before"], doc["system"]["after"], device.cores))
    doc["warnings"] += peak_warnings(doc)  # a direct method above the peak: the file says so too
    return doc


def run_on_device(device: Device, table: LayerTable, builds: list[str], settings: Settings,
                  console: Console, options: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    with progress_display(console) as bars:
        return measure_on(device, table, builds, settings, bars, options)


def run_on_devices(devices: list[Device], table: LayerTable, builds: list[str], settings: Settings,
                   console: Console, options: dict[str, dict[str, Any]] | None = None
                   ) -> list[dict[str, Any] | UserError]:
    """Each device's result document, or its error, in the order given.

    Remote devices (ssh, rpc) are measured in parallel: each is its own machine. A local device
    is this host, whose cores the remote runs' compiling and uploading would disturb, so it is
    measured alone, after them.
    """
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise UserError(f"a device is named twice in {','.join(names)}")
    outcome: dict[str, dict[str, Any] | UserError] = {}

    def attempt(device: Device, bars: Progress) -> None:
        try:
            outcome[device.name] = measure_on(device, table, builds, settings, bars, options, f"{device.name}: ")
        except UserError as exc:
            outcome[device.name] = exc

    with progress_display(console) as bars:
        remote = [d for d in devices if d.transport != "local"]
        with ThreadPoolExecutor(max_workers=max(1, len(remote))) as pool:
            for future in [pool.submit(attempt, d, bars) for d in remote]:
                future.result()
        for device in devices:
            if device.transport == "local":
                attempt(device, bars)
    return [outcome[name] for name in names]

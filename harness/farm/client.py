"""A run on the farm: ask the tracker for boards of the device's key, one per build, in
parallel (as many at once as boards are registered), and merge their outputs.

Each build is measured entirely on one board (its samples never mix boards); the build record
names the board and carries that board's own before/after state. The tracker hands a board to
one session at a time, so no board ever runs two measurements at once.
"""
from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from harness.devices.config import Device
from harness.errors import UserError
from harness.model.layers import LayerTable
from harness.runner.measure import Settings
from harness.runner.request import REFERENCE_FILE, request_to_json

Progress = Callable[[str, str, int, int], None]


def _tracker(device: Device):
    from tvm import rpc  # noqa: PLC0415

    t = device.tracker
    try:
        return rpc.connect_tracker(t.host, t.port)
    except (OSError, RuntimeError) as exc:
        raise UserError(f"device {device.name!r}: cannot reach the RPC tracker {t.host}:{t.port}: {exc}") from None


def board_count(device: Device) -> int:
    """Boards registered under the device's key (free or busy)."""
    summary = _tracker(device).summary()
    servers = [s for s in summary.get("server_info", []) if s.get("key") == f"server:{device.tracker.key}"]
    if not servers:
        raise UserError(f"device {device.name!r}: no board is registered at the tracker "
                        f"{device.tracker.host}:{device.tracker.port} under key {device.tracker.key!r}; start "
                        f"`python -m harness.farm.server --tracker {device.tracker.host}:{device.tracker.port} "
                        f"--key {device.tracker.key}` on a board")
    return len(servers)


def request_session(device: Device, session_timeout_s: float | None = None):
    """An RPC session on a free board of the device's key (waits for one to be free); the
    board's server ends it after session_timeout_s (default: the device's command timeout)."""
    try:
        return _tracker(device).request(device.tracker.key, priority=1,
                                        session_timeout=session_timeout_s or device.command_timeout_s)
    except (OSError, RuntimeError) as exc:
        raise UserError(f"device {device.name!r}: the tracker gave no board for key "
                        f"{device.tracker.key!r}: {exc}") from None


def _call(device: Device, what: str, fn: Callable[[], str]) -> dict[str, Any]:
    try:
        return json.loads(fn())
    except (OSError, RuntimeError) as exc:  # tvm errors from the board are RuntimeErrors
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UserError(f"device {device.name!r}: {what} failed on the board: {detail}") from None


def run_build_on_board(device: Device, request: dict[str, Any], artifacts: list[Path], root: Path,
                       reference: Path, progress: Progress) -> dict[str, Any]:
    build = request["builds"][0]
    progress(build, "waiting for a board", 0, 0)
    sess = request_session(device)
    files = {}
    for i, path in enumerate(artifacts):
        flat = f"upload-{i}-{path.name}"
        sess.upload(str(path), target=flat)
        files[f"artifacts/{path.relative_to(root).as_posix()}"] = flat
    sess.upload(str(reference), target="upload-reference.npy")  # the board needs no PyTorch for it
    files[REFERENCE_FILE] = "upload-reference.npy"
    progress(build, "measuring on a board", 0, 0)
    fn = sess.get_function("harness.run_request")
    out = _call(device, f"build {build}", lambda: fn(json.dumps({**request, "files": files})))
    progress(build, out["builds"][0]["status"], 0, 0)
    return out


def merge(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run output from per-build outputs; the top-level state is the first board's."""
    merged = {k: outputs[0][k] for k in ("system", "environment", "settings")}
    starts = [o["started_utc"] for o in outputs if "started_utc" in o]
    if starts:
        merged["started_utc"] = min(starts)
    merged["builds"] = []
    for out in outputs:
        for record in out["builds"]:
            merged["builds"].append({**record, "board": out.get("board"), "system": out["system"]})
    return merged


def run_on_farm(device: Device, table: LayerTable, builds: list[str], settings: Settings,
                options: dict[str, dict[str, Any]], progress: Progress) -> dict[str, Any]:
    from harness.deploy.ssh_run import stage  # noqa: PLC0415 - the same export as an SSH run

    boards = board_count(device)
    with tempfile.TemporaryDirectory(prefix="harness-farm-") as tmp:
        staged = stage(device, table, builds, options, Path(tmp))
        runnable = staged.runnable(builds)
        requests = [request_to_json(table.config.name, device, [b], settings, options, "artifacts", REFERENCE_FILE)
                    for b in runnable]
        with ThreadPoolExecutor(max_workers=min(boards, len(runnable))) as pool:
            futures = [pool.submit(run_build_on_board, device, req, staged.artifacts[b], staged.root,
                                   staged.reference, progress)
                       for b, req in zip(runnable, requests)]
            outputs = [f.result() for f in futures]
    return staged.with_failed(merge(outputs), builds)


def probe_on_farm(device: Device) -> dict[str, Any]:
    board_count(device)
    sess = request_session(device)
    return _call(device, "the probe", lambda: sess.get_function("harness.probe")())

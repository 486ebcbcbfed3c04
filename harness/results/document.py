"""Assemble a result document from a run's output and what the host knows."""
from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

from harness import __version__
from harness.devices.config import Device
from harness.model.layers import LayerTable
from harness.results.store import SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[2]


def git_commit(repo: Path = REPO) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the harness checkout; (None, None) outside one."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, timeout=10)
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        return None, None


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def model_block(table: LayerTable) -> dict[str, Any]:
    c = table.config
    return {"name": c.name, "input_shape": list(c.input_shape), "width": c.width, "depth": c.depth,
            "seed": c.seed, "total_flops": table.total_flops, "conv_flops": table.conv_flops}


def new_document(device: Device, table: LayerTable, run_output: dict[str, Any],
                 commit: tuple[str | None, bool | None] | None = None) -> dict[str, Any]:
    sha, dirty = commit if commit is not None else git_commit()
    return {"schema_version": SCHEMA_VERSION, "created_utc": utc_now(), "complete": True,
            "harness": {"commit": sha, "dirty": dirty, "version": __version__},
            "device": device.summary(), "model": model_block(table), **run_output}

"""Assemble a result document from a run's output and what the host knows."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from harness import __version__
from harness.devices.config import Device
from harness.devices.peak_basis import apply_basis
from harness.model.layers import LayerTable
from harness.results import fingerprint
from harness.results.store import SCHEMA_VERSION, new_run_id
from harness.timestamps import utc_now

REPO = Path(__file__).resolve().parents[2]


def git(*args: str, repo: Path = REPO) -> str | None:
    """`git args` in the harness checkout: its stripped output, or None if git fails."""
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(repo: Path = REPO) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the harness checkout; (None, None) outside one."""
    commit = git("rev-parse", "HEAD", repo=repo)
    if commit is None:
        return None, None
    return commit, bool(git("status", "--porcelain", "--untracked-files=no", repo=repo))


def model_block(table: LayerTable) -> dict[str, Any]:
    c = table.config
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in c.parameters().items()}  # e.g. UNet width, depth
    return {"name": c.name, "input_shape": list(c.input_shape), **params,
            "seed": c.seed, "total_flops": table.total_flops, "conv_flops": table.conv_flops}


def new_document(device: Device, table: LayerTable, run_output: dict[str, Any],
                 commit: tuple[str | None, bool | None] | None = None) -> dict[str, Any]:
    sha, dirty = commit if commit is not None else git_commit()
    # The runner collects the fingerprint on the device; a farm board runs no harness code.
    found = run_output.get("fingerprint") or fingerprint.from_config(device)
    created = utc_now()
    doc = {"schema_version": SCHEMA_VERSION, "created_utc": created, "run_id": new_run_id(created), "complete": True,
           "harness": {"commit": sha, "dirty": dirty, "version": __version__},
           "device": device.summary(), "model": model_block(table), **run_output,
           "fingerprint": fingerprint.with_tuning(found, run_output.get("builds", []))}
    apply_basis(doc)  # device.peak, and every pct_peak a share of it (harness/devices/peak_basis.py)
    return doc

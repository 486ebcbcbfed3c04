"""Driving asv as its users do: its own command line, in a subprocess, from the repository root.

A failing asv command becomes one UserError carrying the end of asv's output.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.devices.config import Device
from harness.errors import UserError

REPO = Path(__file__).resolve().parents[2]
ASV_TIMEOUT_S = 6 * 3600  # a whole nightly of several builds on a slow board
RESERVED_MACHINES = {"runs"}  # results/runs/ holds the harness's own run files


@dataclass(frozen=True)
class AsvRun:
    args: list[str]
    returncode: int
    output: str


def asv(args: list[str], repo: Path = REPO, env: dict[str, str] | None = None,
        check: bool = True) -> AsvRun:
    """`python -m asv <args> --config <repo>/asv.conf.json` in `repo`."""
    config = repo / "asv.conf.json"
    if not config.is_file():
        raise UserError(f"{config}: asv configuration not found")
    command = [sys.executable, "-m", "asv", *args, "--config", str(config)]
    try:
        proc = subprocess.run(command, cwd=repo, capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, timeout=ASV_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"asv {args[0]} did not finish within {ASV_TIMEOUT_S} s") from None
    run = AsvRun(args, proc.returncode, proc.stdout + proc.stderr)
    if check and proc.returncode != 0:
        tail = " | ".join(line for line in run.output.strip().splitlines()[-5:])
        raise UserError(f"asv {args[0]} failed (exit {proc.returncode}): {tail}")
    return run


def machine_args(device: Device) -> list[str]:
    """`asv machine` arguments describing `device`, named as in devices.yaml."""
    if device.name in RESERVED_MACHINES:
        raise UserError(f"device name {device.name!r} is reserved (results/{device.name}/ holds "
                        "the harness's run files); rename the device in devices.yaml")
    os_name = f"{platform.system()} {platform.release()}" if device.transport == "local" else "Linux"
    cpu = device.cpu_model or device.cpu or "unknown"
    return ["machine", "--machine", device.name, "--yes", "--os", os_name, "--arch", device.arch,
            "--cpu", f"{cpu} ({device.cores} cores, {device.freq_ghz:.2f} GHz)",
            "--num_cpu", str(device.cores), "--ram", "unknown"]


def register_machine(device: Device, repo: Path = REPO, env: dict[str, str] | None = None) -> None:
    """Write the machine's entry (~/.asv-machine.json, asv's own place for it)."""
    asv(machine_args(device), repo, env)


def run_commit(device: Device, repo: Path = REPO, env: dict[str, str] | None = None,
               commit: str = "HEAD") -> AsvRun:
    """Benchmark the checkout as it is, filed under `commit`, keeping the raw samples."""
    return asv(["run", "--environment", f"existing:{sys.executable}", "--set-commit-hash", commit,
                "--machine", device.name, "--record-samples", "--show-stderr",
                # forkserver imports the suite once; "spawn" re-imports torch per benchmark
                "--launch-method", "forkserver"], repo, env)


def publish(repo: Path = REPO, env: dict[str, str] | None = None) -> Path:
    asv(["publish"], repo, env)
    return repo / "reports" / "asv" / "index.html"


def compare(a: str, b: str, device: Device, repo: Path = REPO, factor: float = 1.1,
            env: dict[str, str] | None = None) -> AsvRun:
    return asv(["compare", a, b, "--machine", device.name, "--factor", str(factor), "--split"],
               repo, env)

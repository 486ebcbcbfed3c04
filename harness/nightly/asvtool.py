"""Driving asv as its users do: its own command line, in a subprocess, from the repository root.

A failing asv command becomes one UserError carrying the end of asv's output. asv's machine
file is the repository's own (MACHINE_FILE, through harness.nightly.asv_entry), and each
device is registered once per hardware fingerprint: `<device>-<hash[:8]>`, so results of two
different CPUs behind one device name never share an asv machine.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.devices.config import Device
from harness.errors import UserError
from harness.nightly import asv_entry
from harness.results import fingerprint

REPO = Path(__file__).resolve().parents[2]
ASV_TIMEOUT_S = 6 * 3600  # a whole nightly of several builds on a slow board
RESERVED_MACHINES = {"runs"}  # results/runs/ holds the harness's own run files
MACHINE_FILE = Path(".asv") / "machines.json"  # relative to the repository; git-ignored


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
    command = [sys.executable, "-m", "harness.nightly.asv_entry", *args, "--config", str(config)]
    machine_file = {asv_entry.ENV: str(repo / MACHINE_FILE)}
    try:
        proc = subprocess.run(command, cwd=repo, capture_output=True, text=True,
                              env={**os.environ, **(env or {}), **machine_file}, timeout=ASV_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"asv {args[0]} did not finish within {ASV_TIMEOUT_S} s") from None
    run = AsvRun(args, proc.returncode, proc.stdout + proc.stderr)
    if check and proc.returncode != 0:
        tail = " | ".join(line for line in run.output.strip().splitlines()[-5:])
        raise UserError(f"asv {args[0]} failed (exit {proc.returncode}): {tail}")
    return run


@dataclass(frozen=True)
class AsvMachine:
    name: str  # <device>-<hardware hash, 8 digits>
    hardware: dict[str, Any] | None


def asv_machine(device: Device, stored_hash: str | None = None) -> AsvMachine:
    """The asv machine of `device`: its fingerprint, measured here for the local device; for a
    remote one, the newest stored result's (`stored_hash`), or "unprobed" before its first."""
    if device.name in RESERVED_MACHINES:
        raise UserError(f"device name {device.name!r} is reserved (results/{device.name}/ holds "
                        "the harness's run files); rename the device in devices.yaml")
    if device.transport == "local":
        hardware = fingerprint.collect_hardware(device)
        return AsvMachine(f"{device.name}-{fingerprint.hardware_hash(hardware)[:8]}", hardware)
    return AsvMachine(f"{device.name}-{(stored_hash or 'unprobed')[:8]}", None)


def machine_args(device: Device, machine: AsvMachine) -> list[str]:
    """`asv machine` arguments describing `device` on the machine `machine`."""
    os_name = f"{platform.system()} {platform.release()}" if device.transport == "local" else "Linux"
    cpu = fingerprint.describe(machine.hardware) if machine.hardware else (device.cpu_model or device.cpu or "unknown")
    ram = machine.hardware.get("memory_gib") if machine.hardware else None
    return ["machine", "--machine", machine.name, "--yes", "--os", os_name, "--arch", device.arch,
            "--cpu", f"{cpu} ({device.cores} cores, {device.freq_ghz:.2f} GHz)",
            "--num_cpu", str(device.cores), "--ram", f"{ram} GiB" if ram else "unknown"]


def register_machine(device: Device, machine: AsvMachine, repo: Path = REPO,
                     env: dict[str, str] | None = None) -> None:
    """Write the machine's entry into the repository's own machine file (MACHINE_FILE)."""
    asv(machine_args(device, machine), repo, env)


def run_commit(machine: AsvMachine, repo: Path = REPO, env: dict[str, str] | None = None,
               commit: str = "HEAD") -> AsvRun:
    """Benchmark the checkout as it is, filed under `commit`, keeping the raw samples."""
    return asv(["run", "--environment", f"existing:{sys.executable}", "--set-commit-hash", commit,
                "--machine", machine.name, "--record-samples", "--show-stderr",
                # forkserver imports the suite once; "spawn" re-imports torch per benchmark
                "--launch-method", "forkserver"], repo, env)


def publish(repo: Path = REPO, env: dict[str, str] | None = None) -> Path:
    asv(["publish"], repo, env)
    return repo / "reports" / "asv" / "index.html"


def compare(a: str, b: str, machine: AsvMachine, repo: Path = REPO, factor: float = 1.1,
            env: dict[str, str] | None = None) -> AsvRun:
    return asv(["compare", a, b, "--machine", machine.name, "--factor", str(factor), "--split"],
               repo, env)

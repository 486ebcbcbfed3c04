"""Shared fixtures. Tests run real parts: PyTorch, NNPACK, TVM, the CLI in a subprocess, and a
real OpenSSH server (tests/sshd.py, so other modules can reuse it)."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sshd import SSHServer

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m harness ...` in a subprocess, as a user would run it."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


def as_quiet(doc: dict) -> dict:
    """TEST EDIT of a result copy: no CPU time of other processes between its before and after
    states. For tests of the comparison logic on a real run's samples, which must not depend
    on whether this shared machine happened to be busy while the fixture measured (a busy run
    is rightly left out of verdicts: tests/test_busy_runs.py)."""
    before, after = (doc.get("system") or {}).get("before") or {}, (doc.get("system") or {}).get("after") or {}
    a, b = before.get("cpu_seconds"), after.get("cpu_seconds")
    if isinstance(a, dict) and isinstance(b, dict):
        b["busy"] = a["busy"] + (b["own"] - a["own"])
    return doc


def assert_derived_numbers_agree(doc: dict) -> None:
    """Every derived number in a result equals what the file's own raw numbers give: medians of
    its samples, GFLOP/s from its FLOPs, % of peak from its stored peak (never from a value
    this machine would compute, which is what made a test fail on AVX-512 hosts): the peak of
    its recorded basis (device.peak), cores x that clock x FLOP/cycle."""
    from harness.devices.peak_basis import basis_of  # noqa: PLC0415

    cores, freq, fpc = doc["device"]["cores"], doc["device"]["freq_ghz"], doc["device"]["flops_per_cycle"]
    for dtype, peak in doc["device"]["peak_gflops"].items():
        assert peak == pytest.approx(cores * freq * fpc[dtype], rel=1e-12)
    basis = basis_of(doc)
    for dtype, peak in basis.gflops.items():
        assert peak == pytest.approx(cores * basis.clock_mhz / 1000 * fpc[dtype], rel=1e-12)
    for build in doc["builds"]:
        if build["status"] != "ok":
            continue
        peak = basis.gflops[build["peak_dtype"]]
        assert build["e2e"]["median_ms"] == pytest.approx(statistics.median(build["e2e"]["samples_ms"]))
        for layer in build["layers"]:
            median = statistics.median(layer["samples_ms"])
            assert layer["median_ms"] == pytest.approx(median, rel=1e-12)
            assert layer["gflops"] == pytest.approx(layer["flops"] / (layer["median_ms"] * 1e6), rel=1e-12)
            assert layer["pct_peak"] == pytest.approx(100 * layer["gflops"] / peak, rel=1e-12)


@pytest.fixture(scope="session")
def device():
    """The local device from the shipped devices.yaml (test modules may override the name)."""
    from harness.devices import load_devices  # noqa: PLC0415

    return load_devices(REPO / "devices.yaml").get("local")


@pytest.fixture(scope="session")
def table():
    """The unet-tiny layer table."""
    from harness.model import get_model  # noqa: PLC0415

    return get_model("unet-tiny")


def pytorch_run(out: Path, model: str) -> Path:
    """A real `harness run` of `model` with the PyTorch builds (5 repeats), written to `out`."""
    proc = run_cli("run", "--model", model, "--builds", "caffe2-nnpack,torch",
                   "--repeats", "5", "--warmup", "1", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def tiny_result(tmp_path_factory) -> Path:
    """One real `harness run` of unet-tiny with the PyTorch builds, shared by read-only tests."""
    return pytorch_run(tmp_path_factory.mktemp("run") / "tiny.json", "unet-tiny")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    """One loopback OpenSSH server for the session (tests that kill a server start their own)."""
    server = SSHServer(tmp_path_factory.mktemp("sshd") / "lb").start()
    yield server
    server.kill_all()


@pytest.fixture
def fresh_sshd(tmp_path: Path):
    """A server of this test's own, for tests that kill it."""
    server = SSHServer(tmp_path / "lb").start()
    yield server
    server.kill_all()

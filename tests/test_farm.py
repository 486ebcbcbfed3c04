"""The device farm: a real TVM RPC tracker and two harness board servers on loopback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.sshd import REPO, descendants, free_port, ssh_env, wait_for_port

pytest.importorskip("tvm")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


def _boards_registered(port: int, key: str) -> int:
    from tvm import rpc  # noqa: PLC0415

    try:
        summary = rpc.connect_tracker("127.0.0.1", port).summary()
    except RuntimeError:
        return 0
    return sum(s.get("key") == f"server:{key}" for s in summary.get("server_info", []))


@pytest.fixture
def farm(tmp_path: Path):
    """A tracker and two boards registered under key `farmtest`; yields (port, session log)."""
    port, log = free_port(), tmp_path / "sessions.jsonl"
    procs = [_start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                     "--port-end", str(port + 1)], tmp_path / "tracker.log")]
    try:
        wait_for_port(port, timeout_s=60)  # boards that find no tracker retry only every 5 s
        deadline = time.monotonic() + 60
        for name in ("board-a", "board-b"):
            procs.append(_start(["harness.farm.server", "--tracker", f"127.0.0.1:{port}", "--key", "farmtest",
                                 "--host", "127.0.0.1", "--port", str(free_port()), "--name", name,
                                 "--session-log", str(log)], tmp_path / f"{name}.log"))
        while _boards_registered(port, "farmtest") < 2:
            assert time.monotonic() < deadline, "the boards did not register with the tracker"
            time.sleep(0.5)
        yield port, log
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_run_spread_over_two_boards_one_measurement_per_board(farm, tmp_path: Path):
    port, log = farm
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"devices": {"local": {"transport": "local"}, "farm": {
        "transport": "rpc", "tracker": {"host": "127.0.0.1", "port": port, "key": "farmtest"},
        "arch": "x86_64", "cores": 1, "freq_ghz": 2.0, "flops_per_cycle": {"fp32": 32, "fp16": 32},
        "target": "host", "command_timeout_s": 300}}}))
    # Two runs at once, two builds each: four measurements compete for two boards.
    runs = [subprocess.Popen([sys.executable, "-m", "harness", "run", "--devices-file", str(devices),
                              "--device", "farm", "--model", "unet-tiny", "--builds", "torch,caffe2-nnpack",
                              "--warmup", "1", "--repeats", "3", "--output", str(tmp_path / f"run{i}.json")],
                             cwd=REPO, env=ssh_env(tmp_path / "home"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in runs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    for i in range(2):
        doc = json.loads((tmp_path / f"run{i}.json").read_text())
        assert doc["complete"] is True and doc["device"]["transport"] == "rpc"
        assert [b["name"] for b in doc["builds"]] == ["torch", "caffe2-nnpack"]
        assert all(b["status"] == "ok" and b["board"] in ("board-a", "board-b") and b["system"]["before"]
                   for b in doc["builds"])
    sessions = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(sessions) == 4
    by_board: dict[str, list[tuple[float, float]]] = {}
    for s in sessions:
        by_board.setdefault(s["board"], []).append((s["enter"], s["exit"]))
    assert set(by_board) == {"board-a", "board-b"}  # both boards were used
    for spans in by_board.values():
        spans.sort()
        assert all(prev_exit <= enter for (_, prev_exit), (enter, _) in zip(spans, spans[1:])), spans

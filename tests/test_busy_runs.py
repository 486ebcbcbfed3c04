"""A run measured while other processes held the CPUs is recorded as busy and left out of
verdicts: on 2 cores one competing process can double a layer's time, and a nightly that
judged such a run would cry wolf (issue 10)."""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.devices.state import BUSY_SHARE, BUSY_SHARE_ENV, collect_cpu_seconds, other_cpu_share
from harness.history.judging import judge_frames
from tests.conftest import run_cli


def _burn(seconds: float, clock=time.monotonic) -> None:
    end = clock() + seconds
    while clock() < end:
        pass


def _burn_cpu(seconds: float) -> None:
    _burn(seconds, time.process_time)  # CPU seconds, however busy the machine is


def test_other_processes_share_comes_from_the_raw_counters():
    before = {"cpu_seconds": {"busy": 100.0, "total": 200.0, "own": 10.0}}
    # 10 s of machine time passed (2 cores x 5 s): 6 s busy, of which 2 s were ours
    after = {"cpu_seconds": {"busy": 106.0, "total": 210.0, "own": 12.0}}
    assert other_cpu_share(before, after) == pytest.approx(0.4)
    assert other_cpu_share(before, {"cpu_seconds": None}) is None
    assert other_cpu_share({}, after) is None


def test_a_process_of_our_own_counts_as_ours_not_as_others():
    """The per-build processes are waited-for children: their time is the runner's own."""
    before = collect_cpu_seconds()
    child = multiprocessing.get_context("fork").Process(target=_burn_cpu, args=(0.5,))
    child.start()
    child.join()
    after = collect_cpu_seconds()
    assert before is not None and after is not None
    assert after["own"] - before["own"] >= 0.45


def test_a_run_beside_a_competing_load_is_recorded_busy(tmp_path: Path):
    """Real competition: one busy-looping process per core while `harness run` measures."""
    burners = [multiprocessing.get_context("fork").Process(target=_burn, args=(120,))
               for _ in range(os.cpu_count() or 1)]
    for b in burners:
        b.start()
    try:
        out = tmp_path / "busy.json"
        done = run_cli("run", "--model", "unet-tiny", "--builds", "torch", "--warmup", "0", "--repeats", "3",
                       "--output", str(out), env={BUSY_SHARE_ENV: str(BUSY_SHARE)})  # the default, whatever the caller set
    finally:
        for b in burners:
            b.terminate()
            b.join()
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    share = other_cpu_share(doc["system"]["before"], doc["system"]["after"])
    assert share is not None and share > BUSY_SHARE
    assert any("other processes used" in w for w in doc["warnings"])
    assert "other processes used" in done.stdout + done.stderr


def _rows(label: str, ms: float, busy: list[bool]) -> pd.DataFrame:
    return pd.DataFrame([{"file": f"{label}-{i}", "commit": label, "build": "torch", "layer": "l1",
                          "status": "ok", "complete": True, "samples_ms": [ms * (1 + 0.001 * i)] * 5,
                          "hardware_hash": "0123456789abcdef", "hardware": {}, "software": {},
                          "busy": b} for i, b in enumerate(busy)])


def test_busy_runs_are_left_out_and_said_so():
    quiet = _rows("a", 10.0, [False, False, False])
    # two quiet runs as fast as before, and one busy run twice as slow
    after = pd.concat([_rows("b", 10.0, [False, False]), _rows("b", 20.0, [True]).assign(file="b-busy")])
    j = judge_frames("a", quiet, "b", after)
    assert [x.change.verdict for x in j.judged] == ["same"]
    assert j.judged[0].change.runs_after == 2
    assert j.busy_note == "left out as busy (other processes used the CPUs): 1 of 3 runs of b"


def test_a_bad_busy_share_is_one_clear_error(tiny_result: Path):
    done = run_cli("compare", str(tiny_result), str(tiny_result), env={BUSY_SHARE_ENV: "lots"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("harness: error: HARNESS_BUSY_SHARE='lots': "
                                   "expected a share of the CPUs between 0 and 1")


def test_a_side_with_only_busy_runs_is_not_judged():
    j = judge_frames("a", _rows("a", 10.0, [False] * 3), "b", _rows("b", 20.0, [True] * 3))
    assert j.judged == [] and j.regressions == []
    assert "busy" in j.machine_note and "during every run of b" in j.machine_note


def test_the_runs_of_a_busy_session_are_left_out_with_it():
    """Load comes in bursts: a run of the same session as a busy one was slowed too, below the
    limit, so the whole session goes; a second, quiet session of the same side is judged."""
    quiet = _rows("a", 10.0, [False, False, False])
    burst = _rows("b", 10.0, [True, False, False]).assign(session="s1")
    burst.loc[burst["file"] == "b-1", "samples_ms"] = pd.Series([[13.0] * 5] * (burst["file"] == "b-1").sum(),
                                                                 index=burst.index[burst["file"] == "b-1"])
    calm = _rows("b", 10.0, [False, False, False]).assign(session="s2", file=lambda f: f["file"] + "-s2")
    j = judge_frames("a", quiet, "b", pd.concat([burst, calm], ignore_index=True))
    assert [x.change.verdict for x in j.judged] == ["same"]
    assert j.judged[0].change.runs_after == 3  # the quiet session's runs only
    assert j.busy_note == "left out as busy (other processes used the CPUs): 3 of 6 runs of b"

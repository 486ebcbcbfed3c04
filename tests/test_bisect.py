"""`harness run --commit`, `harness backfill` and `harness bisect` on a real scratch repository of
9 commits (a copy of this checkout) where c4 really slows enc1.conv2 (the test knob,
harness/runner/testknob.py: a 20 ms busy-wait in that layer), every other commit edits text.
Each commit is measured in a temporary git worktree by real runs of unet-tiny (torch, 1 thread).
"""
from __future__ import annotations

import json
import re

import pytest

from tests.test_nightly import LOOSE, SLOW, Scratch, _slow_the_layer, _touch_docs, judge_busy_runs_too  # noqa: F401 - autouse

TINY = ["--model", "unet-tiny", "--runs", "1", "--repeats", "5", "--warmup", "1"]
KNOB_AT = 4


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    s = Scratch(tmp_path_factory.mktemp("bisect"))
    devices = s.repo / "devices.yaml"
    devices.write_text(devices.read_text().replace("    cores: auto\n", "    cores: 1\n", 1))
    for i in range(9):
        if i == KNOB_AT:
            _slow_the_layer(s.repo)
        else:
            _touch_docs(s.repo, f"c{i}")
        s.commit(f"c{i}")
    s.bisect = s.harness("bisect", s.commits[0], s.commits[-1], "--build", "torch", "--layer", SLOW,
                         *TINY, *LOOSE)
    return s


def _commits_stored(s: Scratch) -> list[str]:
    return [json.loads(p.read_text())["harness"]["commit"] for p in s.runs()]


def test_bisect_names_the_commit_that_slowed_the_layer(repo):
    out = repo.bisect.stdout
    assert repo.bisect.returncode == 0, out + repo.bisect.stderr
    assert out.strip().splitlines()[-1].startswith(
        f"bisect: first slower commit for torch {SLOW}: {repo.commits[KNOB_AT]} c{KNOB_AT}")
    steps = re.findall(r"^bisect: step \d+: (\w+) against good \w+: .* -> (good|bad)", out, re.M)
    assert [(c, v) for c, v in steps] == [(repo.commits[4][:12], "bad"), (repo.commits[2][:12], "good"),
                                          (repo.commits[3][:12], "good")]
    assert "noise band" in out and "95% CI" in out


def test_each_step_measured_its_commit_once_in_a_worktree(repo):
    stored = _commits_stored(repo)
    assert sorted(stored) == sorted(repo.commits[i] for i in (0, 8, 4, 2, 3))
    docs = [json.loads(p.read_text()) for p in repo.runs()]
    assert all(d["fingerprint"]["hardware_hash"] != "unknown" and d["harness"]["dirty"] is False for d in docs)
    assert not list((repo.repo / ".git" / "worktrees").glob("*"))  # removed afterwards


def test_run_commit_and_backfill_measure_past_commits(repo):
    c5, c6 = repo.commits[5], repo.commits[6]
    proc = repo.harness("run", "--commit", c5, *TINY, "--builds", "torch")
    assert proc.returncode == 0, proc.stderr
    assert _commits_stored(repo).count(c5) == 1
    back = repo.harness("backfill", f"{repo.commits[4]}..{c6}", *TINY, "--builds", "torch")
    assert back.returncode == 0, back.stderr
    assert f"{repo.commits[4][:12]}: already measured on this machine" in back.stdout
    assert f"{c5[:12]}: already measured on this machine" in back.stdout
    assert f"{c6[:12]}: measuring 1 run(s)" in back.stdout
    assert _commits_stored(repo).count(c6) == 1


def test_bisect_without_a_slowdown_is_one_clear_error(repo):
    proc = repo.harness("bisect", repo.commits[0], repo.commits[2], "--build", "torch", "--layer", SLOW,
                        *TINY, *LOOSE)
    assert proc.returncode == 2
    assert "is not slower at" in proc.stderr and "Traceback" not in proc.stderr

import json

import pytest

from tests.conftest import run_cli


def test_run_on_unet_tiny_prints_the_table_and_writes_the_result(tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("run", "--model", "unet-tiny", "--builds", "torch", "--repeats", "3",
                   "--warmup", "0", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    for text in ("enc0.conv1", "dec0.up", "head.conv", "GFLOP/s", "%peak", "onednn", "network (e2e)",
                 f"result written to {out}"):
        assert text in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["device"]["name"] == "local" and doc["model"]["name"] == "unet-tiny"
    assert [b["name"] for b in doc["builds"]] == ["torch"]


def test_progress_is_shown(tiny_result):
    proc = run_cli("run", "--model", "unet-tiny", "--builds", "torch", "--repeats", "2", "--warmup", "1",
                   "--output", str(tiny_result.parent / "p.json"))
    assert "torch" in proc.stdout and "3/3" in proc.stdout  # warm-up + repeats steps


@pytest.mark.parametrize("args,message", [
    (["run", "--device", "nosuch"], "unknown device 'nosuch'"),
    (["run", "--model", "unet-huge"], "unknown model 'unet-huge'"),
    (["run", "--builds", "torch,tensorflow"], "unknown build 'tensorflow'"),
    (["run", "--builds", "torch,torch"], "a build is named twice"),
    (["run", "--repeats", "many"], "expected a whole number"),
    (["run", "--repeats", "0"], "--repeats must be at least 1"),
    (["run", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["launch"], "invalid choice: 'launch'"),
    ([], "the following arguments are required"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0] and lines[0].startswith("harness: error:")


def test_output_to_an_unwritable_place_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("run", "--model", "unet-tiny", "--builds", "torch", "--repeats", "1", "--warmup", "0",
                   "--output", str(blocker / "sub" / "r.json"))
    assert proc.returncode == 2 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr

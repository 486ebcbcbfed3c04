"""Nothing lost, nothing escapes: concurrent runs, hostile device names, binary files, and one
report page per run. Real CLI processes, real files."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.devices import load_devices
from harness.errors import UserError
from harness.results import store
from tests.conftest import REPO, run_cli

TINY = ["--model", "unet-tiny", "--builds", "torch", "--repeats", "1", "--warmup", "0"]


def local_devices_file(path: Path, name: str = "local") -> Path:
    path.write_text(yaml.safe_dump({"default": name, "devices": {name: {"transport": "local"}}}))
    return path


def test_six_concurrent_runs_leave_six_results(tmp_path):
    """Six `harness run` started together into one results folder: six files, six paths."""
    env = {"HARNESS_RESULTS_DIR": str(tmp_path / "results")}

    procs = [subprocess.Popen([sys.executable, "-m", "harness", "run", *TINY], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO), **env})
             for _ in range(6)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in outs]
    printed = {line.split("result written to ", 1)[1].strip() for out, _ in outs
               for line in out.splitlines() if "result written to " in line}
    files = sorted((tmp_path / "results" / "runs" / "local").glob("*.json"))
    assert len(printed) == 6 and {str(f) for f in files} == printed
    run_ids = {json.loads(f.read_text())["run_id"] for f in files}
    assert len(run_ids) == 6 and all(f.name.startswith(r) for f, r in zip(files, sorted(run_ids)))
    # Reports of them all, concurrently into one folder: six pages, none replacing another.
    reports = [subprocess.Popen([sys.executable, "-m", "harness", "report", str(f), "--output-dir",
                                 str(tmp_path / "reports"), "--results-root", str(tmp_path / "results")],
                                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for f in files]
    assert [p.wait(timeout=600) for p in reports] == [0] * 6
    assert len(list((tmp_path / "reports" / "local").glob("*/index.html"))) == 6


def test_a_result_name_is_created_exclusively(tiny_result, tmp_path):
    doc = store.load_result(tiny_result)
    first = store.save_new_result(dict(doc), tmp_path)
    again = store.save_new_result(dict(doc), tmp_path)  # same run id: a new one is drawn
    assert first != again and first.read_bytes() != b"" and again.is_file()
    before = first.read_bytes()
    with pytest.raises(UserError, match="exists; it is kept"):
        store.save_result(doc, first)
    assert first.read_bytes() == before


def test_output_onto_an_existing_file_is_refused_before_measuring(tmp_path):
    out = tmp_path / "r.json"
    out.write_text("precious")
    proc = run_cli("run", *TINY, "--output", str(out))
    assert proc.returncode == 2 and "never overwritten" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and out.read_text() == "precious"


@pytest.mark.parametrize("name", ["../../trav", "a/b", "[/oops]", "..", ".hidden", "runs", "x" * 65, "sp ace",
                                  "[bold]x[/bold]"])
def test_unsafe_device_names_are_one_clear_error(tmp_path, name):
    path = local_devices_file(tmp_path / "devices.yaml", name)
    with pytest.raises(UserError, match="device name"):
        load_devices(path)
    for args in (["devices", "list"], ["run", *TINY]):
        proc = run_cli(*args, "--devices-file", str(path), env={"HARNESS_RESULTS_DIR": str(tmp_path / "res")})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "device name" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "res").exists() and not (tmp_path.parent / "trav").exists()


def test_a_stored_result_with_an_unsafe_device_name_never_escapes_its_folder(tiny_result, tmp_path):
    doc = store.load_result(tiny_result)
    doc["device"]["name"] = "../../trav"
    with pytest.raises(UserError, match="cannot be used in a file name"):
        store.save_new_result(doc, tmp_path / "results")
    assert not any(tmp_path.rglob("*.json"))


def test_names_are_printed_as_written_never_as_markup(tiny_result, tmp_path):
    """A result (from elsewhere) whose build message and notes look like rich markup prints
    them literally: no MarkupError, no restyled text."""
    doc = json.loads(tiny_result.read_text())
    doc["builds"][0]["notes"] = ["[/oops] and [bold]not bold[/bold]"]
    doc["builds"][1].update(status="failed", message="[red]boom[/red] [/x]", e2e=None, layers=[])
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(doc))
    proc = run_cli("report", str(path), "--output-dir", str(tmp_path / "rep"),
                   "--results-root", str(tmp_path / "store"))
    assert proc.returncode == 0, proc.stderr
    from harness.report.table import print_run
    from harness.terminal import make_console

    buf = io.StringIO()
    print_run(json.loads(path.read_text()), make_console(file=buf, width=300))
    text = buf.getvalue()
    assert "[/oops] and [bold]not bold[/bold]" in text and "[red]boom[/red] [/x]" in text


@pytest.mark.parametrize("content", [b"\xff\xfe\x00d\x00e\x00v", bytes(range(256)), b"devices:\n  \x80: {}\n"])
def test_a_binary_devices_file_is_one_line(tmp_path, content):
    path = tmp_path / "devices.yaml"
    path.write_bytes(content)
    proc = run_cli("devices", "list", "--devices-file", str(path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "not UTF-8 text" in proc.stderr and str(path) in proc.stderr
    assert path.read_bytes() == content


def test_a_directory_as_devices_file_is_one_line(tmp_path):
    path = tmp_path / "devices.yaml"
    path.mkdir()
    proc = run_cli("devices", "list", "--devices-file", str(path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "it is a directory" in proc.stderr


def test_two_results_of_one_commit_get_two_report_pages(tiny_result, tmp_path):
    doc = store.load_result(tiny_result)
    paths = [store.save_new_result({**doc, "run_id": store.new_run_id(doc["created_utc"])}, tmp_path / "res")
             for _ in range(2)]
    for p in paths:
        proc = run_cli("report", str(p), "--output-dir", str(tmp_path / "rep"), "--results-root", str(tmp_path / "res"))
        assert proc.returncode == 0, proc.stderr
    pages = sorted((tmp_path / "rep" / "local").glob("*/index.html"))
    assert len(pages) == 2
    assert all(doc["harness"]["commit"][:12] in p.parent.name for p in pages)

"""Property-based fuzzing (hypothesis) of what users hand the harness: the devices file, the
command line, and result files.

The rule checked on every example: the command either works, or it exits 2 with exactly one
line on stderr starting `harness: error:`; it never shows a traceback, and no file it was
given or that was there before is changed, nor is any partial file left.

The CLI runs in-process (`harness.cli.main`), so hundreds of examples take seconds. Where an
example is valid enough to start real work (measuring, tuning, connecting to a board, running
asv), that entry point is replaced by one that stops the command there: the property is about
how input is checked, and reaching the work counts as "works".
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Reached(BaseException):
    """Raised by the entry points of real work: the input got past every check."""


def _stop(*args, **kwargs):
    raise Reached()


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working directory of the example's own, and the real work replaced by Reached."""
    import harness.devices.check
    import harness.devices.setup
    import harness.history.command
    import harness.nightly.nightly
    import harness.report.pages
    import harness.session
    import harness.tuning.command

    for module, name in [(harness.session, "run_on_device"), (harness.session, "run_on_devices"),
                         (harness.tuning.command, "tune"), (harness.devices.check, "run_check"),
                         (harness.devices.setup, "run_setup"), (harness.nightly.nightly, "run_nightly"),
                         (harness.report.pages, "write_run_report"),
                         (harness.report.pages, "write_compare_report")]:
        monkeypatch.setattr(module, name, _stop)
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def check_outcome(argv: list[str], root: Path, ok_codes: tuple[int, ...] = (0,)) -> int | None:
    """Run the CLI; assert the rule. Returns the exit code (None if real work was reached)."""
    before = snapshot(root)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except Reached:
            code = None
    text = err.getvalue()
    assert "Traceback" not in text, (argv, text)
    if code not in (None, *ok_codes):
        assert code == 2, (argv, code, text)
        assert text.count("\n") == 1 and text.startswith("harness: error: "), (argv, text)
    assert snapshot(root) == before, argv  # nothing changed, nothing half-written
    return code


# --- the devices file -------------------------------------------------------------------------

FIELDS = ["transport", "host", "port", "user", "key", "python", "workdir", "arch", "cpu", "cores",
          "freq_ghz", "flops_per_cycle", "target", "tracker", "trust_on_first_use", "known_hosts",
          "connect_timeout_s", "command_timeout_s", "cross_compiler", "description", "cpu_model",
          "isa", "x-note", "colour"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 70000), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["auto", "local", "ssh", "rpc", "host", "cortex-a53",
                                                          "aarch64", "22", "", "..", "[/x]"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(FIELDS + ["kind", "fp32", "fp16", "key", "port"]),
                                                                       inner, max_size=4)), max_leaves=8)
names = st.one_of(st.sampled_from(["local", "pi", "rasp4", "../x", "a/b", "[/oops]", "runs", "", "é"]),
                  st.text(max_size=10), st.integers(), st.booleans(), st.none())
devices_docs = st.one_of(
    st.fixed_dictionaries({"devices": st.dictionaries(names, st.one_of(
        st.dictionaries(st.sampled_from(FIELDS), values, max_size=6), values), max_size=3)},
        optional={"default": names, "extra": values}),
    values)


def _yaml_text(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True)


devices_files = st.one_of(devices_docs.map(_yaml_text).map(str.encode), st.binary(max_size=200),
                          st.text(max_size=200).map(str.encode))


@FUZZ
@given(content=devices_files, command=st.sampled_from([["devices", "list"], ["run", "--model", "unet-tiny"],
                                                       ["devices", "check", "pi"], ["tune", "--device", "pi"]]))
def test_fuzzed_devices_files(sandbox, content, command):
    path = sandbox / "devices.yaml"
    path.write_bytes(content)
    check_outcome([*command, "--devices-file", str(path)], sandbox)


# --- command-line arguments -------------------------------------------------------------------

COMMANDS = [["run"], ["tune"], ["devices", "list"], ["devices", "check"], ["devices", "setup"], ["report"],
            ["compare"], ["regressions"], ["nightly"], ["devices"], ["frobnicate"], []]
FLAGS = ["--device", "--model", "--builds", "--output", "--warmup", "--repeats", "--devices-file", "--trials",
         "--minutes", "--restart", "--packages", "--commits", "--compare", "--baseline", "--results-root",
         "--output-dir", "--name", "--threshold", "--alpha", "--format", "--devices", "--no-report", "--help-me",
         "--screenshot", "-x", "--"]
words = st.one_of(
    st.sampled_from(["local", "rasp4", "unet", "unet-tiny", "torch", "torch,caffe2-nnpack", "tvm,tvm", "0", "-1",
                     "1", "3", "1e9", "nan", "inf", "0.5", "HEAD", "HEAD~1..HEAD", "..", "a..", "markdown", "html",
                     "missing.json", "out.json", "sub/out.json", "devices.yaml", "/", ".", "", "[/oops]", "../../x"]),
    st.text(max_size=10))


@FUZZ
@given(command=st.sampled_from(COMMANDS), rest=st.lists(st.one_of(st.sampled_from(FLAGS), words), max_size=6))
def test_fuzzed_command_lines(sandbox, command, rest):
    # `--help` prints usage and exits 0 through SystemExit: argparse's own, and fine.
    if any(a in ("-h", "--help") or (a.startswith("--h") and "--help".startswith(a)) for a in rest + command):
        return
    check_outcome([*command, *rest], sandbox)


# --- result files -----------------------------------------------------------------------------

def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            yield from _paths(v, (*prefix, i))


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2, 10**6),
                                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                           max_leaves=6)


@st.composite
def mutated_results(draw, original: dict):
    kind = draw(st.sampled_from(["replace", "delete", "truncate", "bytes"]))
    if kind in ("truncate", "bytes"):
        raw = json.dumps(original).encode()
        if kind == "truncate":
            return raw[:draw(st.integers(0, len(raw) - 1))]
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at + 1:]
    doc = json.loads(json.dumps(original))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if kind == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def original(tiny_result) -> dict:
    return json.loads(tiny_result.read_text())


@FUZZ
@given(data=st.data())
def test_fuzzed_result_files(sandbox, original, data):
    content = data.draw(mutated_results(original))
    path = sandbox / "r.json"
    path.write_bytes(content)
    code = check_outcome(["compare", str(path), str(path), "--results-root", str(sandbox / "results")],
                         sandbox, ok_codes=(0, 1))
    if code in (0, 1):  # it was read as a result: the report of it must not fail either
        check_outcome(["report", str(path), "--results-root", str(sandbox / "results")], sandbox)

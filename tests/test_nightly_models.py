"""`harness nightly --models a,b` and the asv suite over a model list (issue 12).

Cheap checks first: the suite's model list (HARNESS_MODELS, the older HARNESS_MODEL, a bad
name), the union of layer ids asv is given, the benchmarks' per-model dispatch on made-up
result documents, one measurement per model, and the nightly's refusal of a conflicting
HARNESS_MODEL. Then one real case on a scratch copy of this checkout (tests/test_nightly.py's
Scratch): a nightly of unet-tiny and resnet18-small at c1, and at c2, where the test knob slows
enc1.conv2, a layer only unet-tiny has. unet-tiny must be flagged, confirmed by measuring it
(and only it) again, and fail the nightly; resnet18-small, judged on its own history, must not.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from harness.errors import UserError
from harness.model import DEFAULT_MODEL, get_model
from harness.nightly import nightly, suite
from tests.conftest import REPO, run_cli
from tests.test_nightly import (CONFIRM_RUNS, LOOSE, RUNS, SLOW, Scratch, _last_line, _slow_the_layer,  # noqa: F401 - autouse
                                judge_busy_runs_too)

TWO = ["unet-tiny", "resnet18-small"]  # SLOW (enc1.conv2) is a layer of the first only


def _ids(model: str) -> list[str]:
    return [layer.id for layer in get_model(model)]


# --- the suite's model list ---------------------------------------------------------------------

def test_the_suite_reads_a_model_list_and_still_the_older_single_model():
    assert suite.config_from_env({"HARNESS_MODELS": " unet-tiny, resnet18-small,"}).models == TWO
    assert suite.config_from_env({"HARNESS_MODEL": "unet-tiny"}).models == ["unet-tiny"]
    both = {"HARNESS_MODELS": "resnet18-small", "HARNESS_MODEL": "unet-tiny"}
    assert suite.config_from_env(both).models == ["resnet18-small"]  # the new name wins
    assert suite.config_from_env({}).models == [DEFAULT_MODEL]


def test_layer_ids_are_the_union_in_table_order():
    ids = suite.layer_ids(suite.config_from_env({"HARNESS_MODELS": ",".join(TWO)}))
    assert ids == _ids("unet-tiny") + _ids("resnet18-small")  # no id in common
    # unet has every layer id of unet-tiny and more: a shared id is listed once, where it came first
    shared = suite.layer_ids(suite.config_from_env({"HARNESS_MODELS": "unet-tiny,unet"}))
    assert shared[:len(_ids("unet-tiny"))] == _ids("unet-tiny")
    assert sorted(shared) == sorted(set(_ids("unet"))) and len(shared) == len(set(shared))


@pytest.mark.parametrize("value, message", [
    ("unet-tiny,nosuch", "unknown model 'nosuch'; known models: unet, unet-tiny"),
    ("unet-tiny,unet-tiny", "a model is named twice in unet-tiny,unet-tiny"),
    (",", "no model given"),
])
def test_a_bad_model_list_is_a_user_error(value, message):
    with pytest.raises(UserError, match=re.escape(message)):
        suite.config_from_env({"HARNESS_MODELS": value})


def test_nightly_names_a_bad_model_in_one_line_before_measuring():
    proc = run_cli("nightly", "--models", "unet-tiny,nosuch", "--no-report", timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "unknown model 'nosuch'" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""


def test_measure_once_measures_each_model_on_its_own(monkeypatch):
    plans = []

    def fake_runs(plan, repo):
        plans.append(plan)
        return [Path(f"/r/{plan.model}-{i}.json") for i in range(plan.runs)]

    monkeypatch.setattr(suite, "measure_runs", fake_runs)
    env = {"HARNESS_MODELS": ",".join(TWO), "HARNESS_BUILDS": "torch", "HARNESS_RUNS": "2"}
    config = suite.config_from_env(env)
    assert suite.measure_once(config) == {m: [f"/r/{m}-0.json", f"/r/{m}-1.json"] for m in TWO}
    assert [p.model for p in plans] == TWO and all(p.builds == ["torch"] and p.runs == 2 for p in plans)
    plans.clear()
    assert suite.measure_model(config, "resnet18-small") == ["/r/resnet18-small-0.json", "/r/resnet18-small-1.json"]
    assert [p.model for p in plans] == ["resnet18-small"]  # the confirmation's: one model only


# --- benchmarks/unet.py -----------------------------------------------------------------------------

@pytest.fixture
def benchmarks(monkeypatch) -> ModuleType:
    """benchmarks/unet.py as asv imports it, for unet-tiny and resnet18-small with torch."""
    monkeypatch.setenv("HARNESS_MODELS", ",".join(TWO))
    monkeypatch.setenv("HARNESS_BUILDS", "torch")
    monkeypatch.delenv("HARNESS_MODEL", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the module puts the checkout first
    spec = importlib.util.spec_from_file_location("asv_suite_unet", REPO / "benchmarks" / "unet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_takes_the_model_first(benchmarks):
    assert benchmarks.EndToEnd.params == [TWO, ["torch"]]
    assert benchmarks.EndToEnd.param_names == ["model", "build"]
    for cls in (benchmarks.Layer, benchmarks.LayerEfficiency):
        assert cls.params == [TWO, ["torch"], _ids("unet-tiny") + _ids("resnet18-small")]
        assert cls.param_names == ["model", "build", "layer"]
        assert cls.setup_cache is benchmarks.measure_all_builds  # one measurement for every benchmark


def _doc(layer: str, ms: float) -> dict:
    """The fields of a result file the benchmarks read: one build, one layer."""
    return {"builds": [{"name": "torch", "status": "ok", "e2e": {"samples_ms": [10 * ms]},
                        "layers": [{"id": layer, "samples_ms": [ms, ms], "flops": 2e9}]}]}


def test_each_model_reads_its_own_runs_and_skips_a_layer_it_lacks(benchmarks, monkeypatch):
    docs = {"tiny.json": _doc(SLOW, 1.0), "resnet.json": _doc("layer1.0.conv1", 4.0)}
    monkeypatch.setattr(suite, "_result", docs.__getitem__)
    cache = {"unet-tiny": ["tiny.json"], "resnet18-small": ["resnet.json"]}  # setup_cache's value
    layer, e2e = benchmarks.Layer(), benchmarks.EndToEnd()
    layer.setup(cache, "unet-tiny", "torch", SLOW)
    assert layer.devicetime_layer(cache, "unet-tiny", "torch", SLOW) == pytest.approx([1e-3, 1e-3])
    assert e2e.devicetime_e2e(cache, "resnet18-small", "torch") == pytest.approx([0.04])
    with pytest.raises(NotImplementedError):  # asv: skipped, not failed
        layer.setup(cache, "resnet18-small", "torch", SLOW)
    with pytest.raises(NotImplementedError):
        benchmarks.LayerEfficiency().setup(cache, "unet-tiny", "torch", "layer1.0.conv1")


# --- the nightly's environment --------------------------------------------------------------------

def _args() -> argparse.Namespace:
    return argparse.Namespace(repeats=10, warmup=1, runs=2, builds="torch", devices_file=None)


def test_nightly_sets_the_model_list_and_refuses_a_conflicting_older_variable():
    env = nightly.suite_env(_args(), "local", TWO)
    assert env["HARNESS_MODELS"] == "unet-tiny,resnet18-small" and "HARNESS_MODEL" not in env
    with pytest.raises(UserError, match=re.escape(
            "HARNESS_MODEL='unet' is set, but harness nightly measures with --models "
            "('unet-tiny,resnet18-small' here): pass --models or unset HARNESS_MODEL")):
        nightly.refuse_conflicting_env(env, {"HARNESS_MODEL": "unet"})
    with pytest.raises(UserError, match=re.escape("HARNESS_MODELS='unet' is set")):
        nightly.refuse_conflicting_env(env, {"HARNESS_MODELS": "unet"})
    nightly.refuse_conflicting_env(env, {"HARNESS_MODELS": "unet-tiny,resnet18-small"})
    # an old cron line's HARNESS_MODEL naming the one model measured is no conflict
    nightly.refuse_conflicting_env(nightly.suite_env(_args(), "local", ["unet-tiny"]), {"HARNESS_MODEL": "unet-tiny"})


# --- one real nightly of two models -----------------------------------------------------------------

NIGHTLY = ["nightly", "--models", ",".join(TWO), "--builds", "torch", "--repeats", "10", "--warmup", "1",
           "--runs", str(RUNS), "--confirm-runs", str(CONFIRM_RUNS), *LOOSE]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """c1: a nightly of both models; c2 (SLOW slower through the test knob): another, with the
    report pages."""
    s = Scratch(tmp_path_factory.mktemp("nightly-models"))
    devices = s.repo / "devices.yaml"
    text = devices.read_text()
    assert "    cores: auto\n" in text
    devices.write_text(text.replace("    cores: auto\n", "    cores: 1\n", 1))  # see tests/test_nightly.py
    s.commit("c1: as the checkout is")
    s.first = s.harness(*NIGHTLY, "--no-report")
    _slow_the_layer(s.repo)
    s.commit(f"c2: {SLOW} slower through the test knob")
    s.second = s.harness(*NIGHTLY)
    return s


def _entries(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """The last line's entries, by their "local <model>" label."""
    last = _last_line(proc)
    assert last.startswith("nightly: ")
    parts = re.split(r"; (?=local )", last.removeprefix("nightly: "))
    return {part.split(":")[0]: part for part in parts}


def _runs_of(s: Scratch, model: str) -> list[dict]:
    return [doc for doc in (json.loads(p.read_text()) for p in s.runs()) if doc["model"]["name"] == model]


def _sessions(proc: subprocess.CompletedProcess, model: str) -> int:
    """2 if the nightly measured `model` again (interleaved with its ancestor) to confirm a
    suspect series, else 1."""
    return 2 if re.search(rf"^nightly: local {re.escape(model)}: .*again, interleaved, to confirm$", proc.stdout,
                          re.M) else 1


def test_first_nightly_has_one_entry_per_model(scratch):
    c1 = scratch.commits[0]
    assert scratch.first.returncode == 0, scratch.first.stdout + scratch.first.stderr
    entries = _entries(scratch.first)
    assert list(entries) == [f"local {m}" for m in TWO]
    for model in TWO:
        assert entries[f"local {model}"].startswith(f"local {model}: {c1[:12]} not compared: no measured ancestor")


def test_each_model_is_judged_on_its_own_and_one_regression_fails_the_nightly(scratch):
    c1, c2 = scratch.commits
    out = scratch.second.stdout
    assert scratch.second.returncode == 1, out + scratch.second.stderr
    entries = _entries(scratch.second)
    assert list(entries) == [f"local {m}" for m in TWO]
    for model in TWO:
        layers = len(_runs_of(scratch, model)[0]["builds"][0]["layers"])
        assert (f"local {model}: compared {c2[:12]} with its nearest measured ancestor {c1[:12]}, "
                f"judged {layers} build x layer series") in entries[f"local {model}"]
    assert re.search(rf"moved: .*torch {re.escape(SLOW)} \+[\d.]+% \(slower\)", entries["local unet-tiny"])
    assert entries["local resnet18-small"].endswith("moved: none")  # the knob's layer is not its
    # unet-tiny's table names exactly the slowed layer; resnet18-small's has nothing
    tiny = out[out.index(f"regressions on local (unet-tiny) at {c2[:12]} against {c1[:12]}"):]
    assert set(re.findall(r"\b(enc\d\.\w+|dec\d\.\w+|mid\.\w+|head\.\w+)\b", tiny.split("\nnightly: ")[0])) == {SLOW}
    assert f"regressions on local (resnet18-small) at {c2[:12]} against {c1[:12]}: none" in out


def test_each_model_has_its_own_runs_and_only_the_doubted_one_was_measured_again(scratch):
    c1, c2 = scratch.commits
    assert _sessions(scratch.second, "unet-tiny") == 2  # flagged, so confirmed
    assert re.search(rf"^nightly: local unet-tiny: confirmation: 1 series flagged and \d+ suspect after one "
                     rf"session of {c2[:12]}; {c2[:12]} measured again beside {c1[:12]}, judging the suspects "
                     r"alone, flags 1$",
                     scratch.second.stdout, re.M)
    groups = {}
    for model in TWO:
        runs = _runs_of(scratch, model)
        # a confirmation measures c1 and c2 again, interleaved: one more session of each
        sessions = _sessions(scratch.second, model)
        expected = [c1, c2] * (RUNS + CONFIRM_RUNS * (sessions - 1))
        assert sorted(doc["harness"]["commit"] for doc in runs) == sorted(expected), model
        groups[model] = {doc["run_group"]["id"] for doc in runs}  # one group per session of a model
        assert len(groups[model]) == 2 * sessions, model
    assert not groups["unet-tiny"] & groups["resnet18-small"]


def test_asv_files_each_model_under_its_own_parameter(scratch):
    c2 = scratch.commits[1]
    discovered = json.loads((scratch.repo / "results" / "benchmarks.json").read_text())
    layer = discovered["unet.Layer.devicetime_layer"]
    assert layer["param_names"] == ["model", "build", "layer"]
    assert layer["params"][0] == [repr(m) for m in TWO]  # asv keeps parameters as their repr
    [filed] = (scratch.repo / "results").glob(f"local-*/{c2[:8]}-*.json")
    doc = json.loads(filed.read_text())
    row = dict(zip(doc["result_columns"], doc["results"]["unet.Layer.devicetime_layer"]))
    values = dict(zip(itertools.product(*row["params"]), row["result"]))

    def value(model: str, layer_id: str) -> float | None:
        return values[(repr(model), "'torch'", repr(layer_id))]

    assert value("unet-tiny", SLOW) > 0 and value("resnet18-small", "layer1.0.conv1") > 0
    for model, lacking in (("resnet18-small", SLOW), ("unet-tiny", "layer1.0.conv1")):
        missing = value(model, lacking)
        assert missing is None or missing != missing, (model, lacking)  # skipped: null or NaN


def test_one_report_page_lists_the_models_side_by_side(scratch):
    written = re.findall(r"report written to (\S+)", scratch.second.stdout)
    assert len(written) == 1
    page = Path(written[0])
    text = page.read_text()
    for model in TWO:  # a row per network, linking to that network's own page
        assert f'data-model="{model}"' in text
        assert (page.parent / model / "index.html").is_file()

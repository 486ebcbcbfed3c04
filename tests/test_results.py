import copy
import json

import jsonschema
import pandas as pd
import pytest

from harness.errors import UserError
from harness.results import store
from harness.results.frame import e2e_frame, layers_frame
from harness.model import get_model
from tests.conftest import REPO, assert_derived_numbers_agree, run_cli


def test_real_result_validates_against_the_schema_file(tiny_result):
    doc = json.loads(tiny_result.read_text())
    jsonschema.validate(doc, store.schema())
    assert doc["schema_version"] == store.SCHEMA_VERSION == 3
    assert doc["complete"] is True
    assert doc["created_utc"].endswith("Z")
    assert set(doc["device"]["peak_gflops"]) == {"fp32", "fp16", "int8"}
    assert {"governor", "freq_mhz", "temp_c", "load_1m"} <= set(doc["system"]["before"])


def test_result_carries_raw_samples_and_derived_numbers_agree(tiny_result):
    doc = store.load_result(tiny_result)
    table = get_model("unet-tiny")
    for build in doc["builds"]:
        assert build["status"] == "ok"
        assert len(build["e2e"]["samples_ms"]) == doc["settings"]["repeats"] == 5
        assert [layer["id"] for layer in build["layers"]] == table.ids
        assert all(len(layer["samples_ms"]) == 5 for layer in build["layers"])
    assert_derived_numbers_agree(doc)


def test_round_trip(tiny_result, tmp_path):
    doc = store.load_result(tiny_result)
    path = store.save_result(doc, tmp_path / "copy.json")
    assert store.load_result(path) == doc


def make_v2(doc):
    v2 = copy.deepcopy(doc)
    v2["schema_version"] = 2
    del v2["fingerprint"]
    return v2


def make_v1(doc):
    v1 = make_v2(doc)
    v1["schema_version"] = 1
    v1["system"] = v1["system"]["before"]
    del v1["complete"]
    return v1


def test_old_version_migrates(tiny_result, tmp_path):
    doc = store.load_result(tiny_result)
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(make_v1(doc)))
    migrated = store.load_result(path)
    assert migrated["schema_version"] == 3
    assert migrated["system"] == {"before": doc["system"]["before"], "after": None}
    assert migrated["fingerprint"]["hardware_hash"] == "unknown"
    assert migrated["complete"] is True
    assert migrated["builds"] == doc["builds"]


def test_v2_migrates_to_an_unknown_machine_never_compared_silently(tiny_result, tmp_path):
    doc = store.load_result(tiny_result)
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(make_v2(doc)))
    migrated = store.load_result(path)
    assert migrated["fingerprint"] == {"hardware": None, "hardware_hash": "unknown", "software": {}}
    assert migrated["builds"] == doc["builds"]
    proc = run_cli("compare", str(path), str(tiny_result))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("machine changed between v2 and tiny: not compared "
                                  "(unknown machine (result from before fingerprints) vs ")
    assert "| torch |" not in proc.stdout


def test_a_result_records_its_machine_and_software(tiny_result):
    from harness.results.fingerprint import hardware_hash  # noqa: PLC0415

    fp = store.load_result(tiny_result)["fingerprint"]
    assert fp["hardware_hash"] == hardware_hash(fp["hardware"]) != "unknown"
    assert fp["hardware"]["cores_online"] >= 1 and fp["hardware"]["memory_gib"] > 0
    assert fp["hardware"]["emulated"] is False
    assert fp["hardware"]["cpu"]["id"]  # vendor/family/model/stepping or ARM part
    assert {"kernel", "python", "torch", "nnpack"} <= set(fp["software"])
    assert fp["software"]["tuning"] == {}  # the PyTorch builds apply no tuning database


def test_software_versions_are_known_without_importing_torch_or_tvm():
    """The device's parent runner never imports torch or TVM (each build runs in a child)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from importlib import metadata  # noqa: PLC0415

    code = ("import json, sys; from harness.results.fingerprint import collect_software; "
            "s = collect_software(); assert 'torch' not in sys.modules and 'tvm' not in sys.modules; "
            "print(json.dumps(s))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    software = json.loads(done.stdout)
    assert software["torch"] == metadata.version("torch")
    assert software["tvm"] == metadata.version("apache-tvm")
    assert software["nnpack"] == f"libtorch_cpu of torch {software['torch']}"


ZEN = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: {model}\n" \
      "model name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: fpu sse sse2 avx avx2 fma {extra}\n\n"


def test_two_cpus_with_one_model_name_have_different_fingerprints():
    """Zen 3 and Zen 5 both say "AMD EPYC" (seen on this project's machines)."""
    from harness.results.fingerprint import collect_cpu, hardware_hash  # noqa: PLC0415

    zen3 = collect_cpu(ZEN.format(family=25, model=1, extra="hypervisor"))
    zen5 = collect_cpu(ZEN.format(family=26, model=2, extra="avx512f"))
    assert zen3["model_name"] == zen5["model_name"] == "AMD EPYC"
    assert zen3["id"]["cpu family"] == "25" and "avx512f" in zen5["simd"]
    assert "hypervisor" not in zen3["simd"]  # not a SIMD flag: no part of the identity
    assert hardware_hash({"cpu": zen3}) != hardware_hash({"cpu": zen5})
    # only the SIMD flags count: a hypervisor flag more or less is the same machine
    assert collect_cpu(ZEN.format(family=25, model=1, extra="")) == zen3


def test_newer_version_is_refused(tiny_result, tmp_path):
    doc = json.loads(tiny_result.read_text())
    doc["schema_version"] = 99
    path = tmp_path / "future.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="schema_version 99 is newer than this harness reads"):
        store.load_result(path)


@pytest.mark.parametrize("content,message", [
    ('{"schema_version": 3, "builds": [', "corrupt result file, not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"hello": 1}', "no integer 'schema_version'"),
    ('{"schema_version": 2}', "invalid result at (top level)"),
    ('{"schema_version": 3}', "invalid result at (top level)"),
])
def test_bad_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        store.load_result(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_document_never_replaces_a_good_file(tiny_result, tmp_path):
    good = tmp_path / "run.json"
    good.write_bytes(tiny_result.read_bytes())
    doc = store.load_result(good)
    doc["builds"][0]["layers"][0]["samples_ms"] = []  # invalid: no samples
    with pytest.raises(UserError):
        store.save_result(doc, good)
    assert good.read_bytes() == tiny_result.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp file left behind


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    path.write_text("old")

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(store.os, "fsync", boom)
    with pytest.raises(OSError):
        store.write_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_pandas_loader_gives_one_tidy_row_per_build_and_layer(tiny_result):
    df = layers_frame([tiny_result])
    n_layers = len(get_model("unet-tiny"))
    assert len(df) == 2 * n_layers
    assert not df.duplicated(["build", "layer"]).any()
    assert {"build", "layer", "op", "flops", "median_ms", "gflops", "pct_peak", "impl", "commit",
            "device"} <= set(df.columns)
    assert set(df.build) == {"caffe2-nnpack", "torch"}
    assert pd.api.types.is_float_dtype(df.median_ms)
    e2e = e2e_frame([tiny_result])
    assert list(e2e.build) == ["caffe2-nnpack", "torch"] and (e2e.median_ms > 0).all()


def test_default_path_is_under_results_runs_device(tiny_result, tmp_path):
    doc = store.load_result(tiny_result)
    path = store.default_result_path(doc, tmp_path)
    assert path.parent == tmp_path / "runs" / doc["device"]["name"]
    assert path.name.endswith("_unet-tiny.json")

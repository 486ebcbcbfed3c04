"""The TVM builds on unet-tiny: real TVM compiles, real NNPACK, the real tuning search."""
import json
import re

import pytest

from harness.builds import REGISTRY
from harness.builds.tvm_nnpack import TVMNNPACKBuild, candidate_impls
from harness.devices import load_devices
from harness.model import get_model
from harness.runner.measure import Settings
from harness.runner.run import RunRequest, run
from harness.tuning.command import kinds_for
from harness.tuning.database import Candidate, load_database
from harness.tuning.search import Budget, run_search
from harness.tuning.tasks import tvm_conv_tasks
from tests.conftest import REPO



def run_builds(table, device, builds, options=None, repeats=2):
    out = run(RunRequest(table, device, builds, Settings(0, repeats), options or {}))
    return {b["name"]: b for b in out["builds"]}


def test_tvm_and_hybrid_match_the_reference_with_layer_ids(table, device, tmp_path):
    opts = {"tuning_dir": tmp_path}  # empty databases: untuned, no hybrid choices
    builds = run_builds(table, device, ["tvm", "tvm-nnpack"], {"tvm": opts, "tvm-nnpack": opts})
    for name in ("tvm", "tvm-nnpack"):
        b = builds[name]
        assert b["status"] == "ok", b["message"]
        assert b["max_rel_error"] <= b["tolerance"]
        assert [layer["id"] for layer in b["layers"]] == table.ids
        assert all(len(layer["samples_ms"]) == 2 for layer in b["layers"])
        # a layer fused into a conv's kernel (tests/test_tvm_fusion.py) has no time of its own
        assert all(layer["median_ms"] > 0 or layer["impl"].startswith("tvm:fused into") for layer in b["layers"])
    assert {layer["impl"].split(" (+")[0] for layer in builds["tvm"]["layers"] if layer["op"] == "conv2d"} \
        == {"tvm:untuned"}
    assert any("harness tune" in note for note in builds["tvm"]["notes"])


def test_forcing_a_hybrid_layer_to_an_nnpack_algorithm_shows_in_the_result(table, device, tmp_path):
    force = {"enc1.conv2": "nnpack:wt8x8/precompute", "dec0.conv1": "nnpack:ft8x8/compute"}
    b = run_builds(table, device, ["tvm-nnpack"], {"tvm-nnpack": {"force": force, "tuning_dir": tmp_path}})["tvm-nnpack"]
    assert b["status"] == "ok", b["message"]
    by_id = {layer["id"]: layer for layer in b["layers"]}
    for lid, impl in force.items():
        assert by_id[lid]["impl"] == impl
        # timed inside the TVM module, under the layer's own id
        assert by_id[lid]["median_ms"] > 0 and by_id[lid]["gflops"] > 0
    assert by_id["enc1.conv1"]["impl"].startswith("tvm")


def test_an_invalid_forced_algorithm_fails_that_build_only(table, device, tmp_path):
    force = {"enc1.conv2": "nnpack:direct/compute"}  # NNPACK's direct is 1x1 only
    builds = run_builds(table, device, ["tvm-nnpack", "torch"], {"tvm-nnpack": {"force": force, "tuning_dir": tmp_path}})
    assert builds["tvm-nnpack"]["status"] == "failed"
    assert "status 26 (nnp_status_unsupported_algorithm)" in builds["tvm-nnpack"]["message"]
    assert builds["tvm-nnpack"]["layers"] == []
    assert builds["torch"]["status"] == "ok"


def test_tuning_writes_a_database_the_next_build_picks_up(table, device, tmp_path):
    from harness.builds.tvm_common import make_target, target_dict

    db = load_database(device, "tvm-conv2d", target_dict(device), tmp_path)
    tasks = tvm_conv_tasks(table, device, make_target(device), 8)
    assert run_search(db, tasks, Budget(trials=2))
    saved = json.loads(db.path.read_text())
    assert set(saved["records"]) == {t.workload for t in tasks}
    assert all(len(r["candidates"]) == 2 for r in saved["records"].values())
    assert all(c["samples_ms"] for r in saved["records"].values() for c in r["candidates"])

    # unfused: every conv runs the tile tuned for it (a conv with a pool fused after it may need
    # another: tests/test_tvm_fusion.py)
    b = run_builds(table, device, ["tvm"], {"tvm": {"tuning_dir": tmp_path, "fuse": False}})["tvm"]
    assert b["status"] == "ok"
    assert {layer["impl"] for layer in b["layers"] if layer["op"] == "conv2d"} == {"tvm"}

    # resuming measures only what is new
    assert run_search(db, tasks, Budget(trials=3))
    reloaded = load_database(device, "tvm-conv2d", target_dict(device), tmp_path)
    assert all(len(r.candidates) == 3 for r in reloaded.records.values())


def test_hybrid_choice_table_round_trips_and_drives_the_build(table, device, tmp_path):
    from harness.builds.tvm_common import target_dict

    db = load_database(device, "tvm-nnpack", target_dict(device), tmp_path)
    layer = table["enc1.conv2"]
    db.add(layer.workload_key(), layer.id, len(candidate_impls()),
           Candidate({"impl": "tvm"}, [9.0, 9.5]))
    db.add(layer.workload_key(), layer.id, len(candidate_impls()),
           Candidate({"impl": "nnpack:ft16x16/precompute"}, [1.0, 1.2]))
    db.add(layer.workload_key(), layer.id, len(candidate_impls()),
           Candidate({"impl": "nnpack:direct/compute"}, None, "NNPACK ... status 26"))
    db.save()
    again = load_database(device, "tvm-nnpack", target_dict(device), tmp_path)
    assert again.records == db.records
    assert again.best_params(layer.workload_key()) == {"impl": "nnpack:ft16x16/precompute"}

    b = run_builds(table, device, ["tvm-nnpack"], {"tvm-nnpack": {"tuning_dir": tmp_path}})["tvm-nnpack"]
    by_id = {layer["id"]: layer for layer in b["layers"]}
    assert by_id["enc1.conv2"]["impl"] == "nnpack:ft16x16/precompute"


def test_hybrid_search_measures_and_validates_every_candidate(table, device, tmp_path):
    from harness.builds.tvm_nnpack import hybrid_tasks
    from harness.builds.tvm_common import target_dict

    small = get_model("unet-tiny")
    db = load_database(device, "tvm-nnpack", target_dict(device), tmp_path)
    tasks = [t for t in hybrid_tasks(small, device, db, tmp_path) if t.layer.id == "enc1.conv2"]
    assert run_search(db, tasks, Budget())
    record = db.records[tasks[0].workload]
    results = {c.params["impl"]: c for c in record.candidates}
    assert set(results) == set(candidate_impls(tasks[0].layer))
    assert "nnpack:direct/compute" not in results  # NNPACK's direct is 1x1 only: never offered for a 3x3 conv
    assert results["nnpack:wt8x8/precompute"].ok and results["tvm"].ok
    assert record.best().params["impl"] in results


def test_tune_plans_the_tvm_database_before_the_hybrid():
    assert kinds_for(["tvm-nnpack"]) == ["tvm-conv2d", "tvm-nnpack"]
    assert "tvm-nnpack" in REGISTRY and TVMNNPACKBuild.tolerance == 1e-3


@pytest.mark.parametrize("build_name", ["tvm", "tvm-nnpack"])
def test_export_then_load_runs_from_the_artifacts_alone(table, device, tmp_path, build_name):
    from harness.builds import get_build
    from harness.builds.base import BuildContext
    from harness.model.weights import make_input, make_weights
    from harness.runner.run import reference_output

    weights = make_weights(table)
    opts = {"tuning_dir": tmp_path / "tuning"}
    if build_name == "tvm-nnpack":
        opts["force"] = {"enc1.conv2": "nnpack:wt8x8/precompute"}
    ctx = BuildContext(table, weights, device, opts, device.cores)
    build = get_build(build_name)
    files = build.export(ctx, tmp_path / build_name)
    assert sorted(f.name for f in files) == ["manifest.json", "module.so"]
    # the device side: a fresh build object, only the artifacts and the seeded weights
    exe = get_build(build_name).load(BuildContext(table, make_weights(table), device, {}, device.cores),
                                     tmp_path / build_name)
    x = make_input(table)
    ref = reference_output(table, weights, x)
    out = exe.run(x)
    assert abs(out - ref).max() / abs(ref).max() < build.tolerance
    _, times = exe.run_timed(x, __import__("time").perf_counter_ns)
    assert set(times) == set(table.ids)
    if build_name == "tvm-nnpack":
        assert exe.impl("enc1.conv2") == "nnpack:wt8x8/precompute"


@pytest.mark.parametrize("device_name,elf_class,machine", [("rasp3b", "ELF32", "ARM"), ("rasp4", "ELF64", "AArch64")])
def test_unet_builds_cross_compile_to_arm_shared_objects(table, tmp_path, device_name, elf_class, machine):
    import subprocess

    from harness.builds import get_build
    from harness.builds.base import BuildContext
    from harness.model.weights import make_weights

    pi = load_devices(REPO / "devices.yaml").get(device_name)
    ctx = BuildContext(table, make_weights(table), pi, {"tuning_dir": tmp_path / "tuning"}, pi.cores)
    files = get_build("tvm-nnpack").export(ctx, tmp_path / device_name)
    so = next(f for f in files if f.suffix == ".so")
    header = subprocess.run(["readelf", "-h", str(so)], capture_output=True, text=True, check=True).stdout
    assert re.search(rf"Class:\s+{elf_class}", header) and re.search(rf"Machine:\s+{machine}\b", header)
    assert "DYN (Shared object file)" in header

"""The fp16-winograd build on unet-tiny: real TVM kernels, the real search, the real runner."""
from __future__ import annotations

import dataclasses
import json
import subprocess

import numpy as np
import pytest

from harness.builds import REGISTRY
from harness.builds.base import BuildContext
from harness.builds.fp16_winograd import FP16WinogradBuild, impl_label, winograd_tasks
from harness.devices import load_devices
from harness.model.weights import make_input, make_weights
from harness.runner.measure import Settings
from harness.runner.run import RunRequest, run
from harness.tuning.database import load_database
from harness.tuning.search import Budget, run_search
from harness.tuning.winograd import WinogradParams, transform_matrices, transform_weights
from tests.conftest import REPO



def run_builds(table, device, builds, options=None):
    out = run(RunRequest(table, device, builds, Settings(0, 2), options or {}))
    return {b["name"]: b for b in out["builds"]}


def conv_impls(build: dict) -> set[str]:
    return {layer["impl"] for layer in build["layers"] if layer["op"] == "conv2d"}


def test_weight_transform_is_winograds_identity():
    # A^T [(G g G^T) * (B^T d B)] A == the 3x3 correlation of one m+2 tile, for topi's matrices
    rng = np.random.default_rng(1)
    for m in (2, 4, 6):
        A, B, _ = transform_matrices(m)
        g = rng.standard_normal((1, 1, 3, 3))
        d = rng.standard_normal((m + 2, m + 2))
        u = transform_weights(g, m)[:, :, 0, 0]
        y = A.T @ (u * (B.T @ d @ B)) @ A
        direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g[0, 0]) for j in range(m)] for i in range(m)])
        np.testing.assert_allclose(y, direct, rtol=1e-9, atol=1e-9)


def with_fp16_math(device, on: bool):
    """The local device as a CPU with (AVX512-FP16, an A76) or without fp16 arithmetic. Both
    paths compile and run on every x86 host: LLVM widens half operations where the CPU has none
    (slowly), so neither test depends on which CPU this session got."""
    fp32 = device.flops_per_cycle["fp32"]
    return dataclasses.replace(device, flops_per_cycle={"fp32": fp32, "fp16": 2 * fp32 if on else fp32})


@pytest.mark.parametrize("fp16_math", [False, True], ids=["fp16-storage", "fp16-arithmetic"])
def test_untuned_then_tuned_build(table, device, tmp_path, fp16_math):
    device = with_fp16_math(device, fp16_math)
    opts = {"fp16-winograd": {"tuning_dir": tmp_path}}
    b = run_builds(table, device, ["fp16-winograd"], opts)["fp16-winograd"]
    assert b["status"] == "ok", b["message"]
    assert 0 < b["max_rel_error"] <= b["tolerance"] == FP16WinogradBuild.tolerance
    assert b["precision"] == "fp16" and b["peak_dtype"] == ("fp16" if fp16_math else "fp32")
    if fp16_math:
        assert any("fp16 storage and fp16 arithmetic" in note for note in b["notes"])
    else:
        assert any("fp16 storage, fp32 arithmetic" in note and "no fp16 math" in note for note in b["notes"])
    assert [layer["id"] for layer in b["layers"]] == table.ids
    impls = conv_impls(b)
    assert all(i.endswith(":untuned") for i in impls)
    winograd = "winograd-fp16:F4x4" if fp16_math else "winograd:F4x4/fp16-storage"
    assert f"{winograd}:untuned" in impls
    assert any("winograd-fp16" in i for i in impls) == fp16_math  # claims fp16 math only with it

    db = load_database(device, "fp16-winograd", {"kind": "llvm"}, tmp_path)
    tasks = winograd_tasks(table, device, db, tmp_path)
    assert run_search(db, tasks, Budget(trials=2))
    saved = json.loads(db.path.read_text())
    assert set(saved["records"]) == {t.workload for t in tasks}
    assert all(c["samples_ms"] and not c["error"] for r in saved["records"].values() for c in r["candidates"])

    tuned = run_builds(table, device, ["fp16-winograd"], opts)["fp16-winograd"]
    assert tuned["status"] == "ok", tuned["message"]
    assert tuned["max_rel_error"] <= tuned["tolerance"]
    impls = conv_impls(tuned)
    assert not any(i.endswith(":untuned") for i in impls)
    assert winograd in impls


def test_impl_labels_say_fp16_math_only_where_the_device_has_it(device):
    plain, fp16_device = with_fp16_math(device, False), with_fp16_math(device, True)
    p = WinogradParams(4, 4, 16)
    assert impl_label(p, plain, tuned=True) == "winograd:F4x4/fp16-storage"
    assert impl_label(p, fp16_device, tuned=True) == "winograd-fp16:F4x4"
    assert impl_label(p, fp16_device, tuned=False) == "winograd-fp16:F4x4:untuned"
    assert FP16WinogradBuild().peak_dtype(plain) == "fp32"
    assert FP16WinogradBuild().peak_dtype(fp16_device) == "fp16"


class TightWinograd(FP16WinogradBuild):
    """The real build held to an fp32-like tolerance that fp16 storage cannot meet."""

    name = "fp16-winograd-tight"
    tolerance = 1e-5


def test_error_beyond_the_tolerance_fails_the_build(table, device, tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, TightWinograd.name, f"{__name__}:TightWinograd")
    builds = run_builds(table, device, [TightWinograd.name, "torch"], {TightWinograd.name: {"tuning_dir": tmp_path}})
    assert builds[TightWinograd.name]["status"] == "failed"
    assert "exceeds the tolerance" in builds[TightWinograd.name]["message"]
    assert builds["torch"]["status"] == "ok"


def test_export_then_load_runs_the_same_network(table, device, tmp_path):
    ctx = BuildContext(table, make_weights(table), device, {"tuning_dir": tmp_path / "tuning"})
    build = FP16WinogradBuild()
    files = build.export(ctx, tmp_path / "art")
    assert {f.name for f in files} == {"module.so", "manifest.json"}
    x = make_input(table)
    np.testing.assert_array_equal(build.load(ctx, tmp_path / "art").run(x), build.compile(ctx).run(x))


def test_cross_export_for_a_pi5_computes_in_fp16(table, tmp_path):
    pi5 = load_devices(REPO / "devices.yaml").get("rasp5")
    assert pi5.fp16_arithmetic
    ctx = BuildContext(table, make_weights(table), pi5, {"tuning_dir": tmp_path / "tuning"})
    module, manifest = FP16WinogradBuild().export(ctx, tmp_path / "art")
    header = subprocess.run(["readelf", "-h", str(module)], capture_output=True, text=True, check=True).stdout
    assert "AArch64" in header
    impls = json.loads(manifest.read_text())["impls"]
    assert impls["enc1.conv2"] == "winograd-fp16:F4x4:untuned"

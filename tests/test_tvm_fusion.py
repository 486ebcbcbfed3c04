"""The TVM builds' fusion (harness/builds/tvm_fusion.py): a pool computed inside the conv before
it, a resize+add+relu inside the conv after it. The groups and tiles are checked on tables and
databases made here; the builds are real TVM compiles of unet-tiny (a few seconds each)."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest

from harness.builds import get_build
from harness.builds.base import BuildContext, relative_error
from harness.builds.tvm_fusion import FusedGroup, find_groups, plan_fusion, pool_tile
from harness.model import get_model
from harness.model.layers import INPUT, RELU, LayerTable, ModelConfig, Shape, TableBuilder, build_layer_table
from harness.model.weights import make_input, make_weights
from harness.runner.measure import Settings
from harness.runner.run import RunRequest, reference_output, run
from harness.tuning.conv_direct import ConvParams
from harness.tuning.database import Candidate, TuningDatabase

UNET_TINY_GROUPS = {
    "enc0.conv2": FusedGroup("enc0.conv2", after="enc0.pool", keep_conv=True),  # dec0.up reads it too
    "enc1.conv2": FusedGroup("enc1.conv2", after="enc1.pool", keep_conv=True),
    "dec1.conv1": FusedGroup("dec1.conv1", before="dec1.up"),
    "dec0.conv1": FusedGroup("dec0.conv1", before="dec0.up"),
}
ABSORBED = {"enc0.pool": "enc0.conv2", "enc1.pool": "enc1.conv2", "dec1.up": "dec1.conv1", "dec0.up": "dec0.conv1"}


@dataclass(frozen=True)
class PoolNet(ModelConfig):
    """Pools the UNet does not have: a plain 2x2 max pool whose conv no one else reads (fused,
    writing only the pool), and an overlapping 3x3 stride-2 one (never fused)."""

    input_shape: Shape = (1, 3, 16, 16)

    def lay_out(self, b: TableBuilder) -> None:
        x = b.conv("c1", INPUT, 16, 3, padding=1, activation=RELU)
        x = b.maxpool("p1", x, 2, 2)
        x = b.conv("c2", x, 16, 3, padding=1)
        x = b.maxpool("p2", x, 3, 2, padding=1)
        b.conv("head", x, 4, 3, padding=1)


def pool_net() -> LayerTable:
    return build_layer_table(PoolNet("poolnet"))


def all_convs(table: LayerTable) -> set[str]:
    return {layer.id for layer in table.convs}


def test_groups_follow_the_graph_not_the_names():
    assert find_groups(get_model("unet-tiny"), all_convs(get_model("unet-tiny"))) == UNET_TINY_GROUPS
    unet = get_model("unet")
    groups = find_groups(unet, all_convs(unet))
    absorbed = {lid: g.conv for g in groups.values() for lid in g.absorbed}
    for layer in unet:
        if layer.op == "maxpool_relu":
            assert absorbed[layer.id] == layer.inputs[0] and groups[layer.inputs[0]].keep_conv
        if layer.op == "resize_add_relu":
            assert groups[absorbed[layer.id]].before == layer.id
    assert len(absorbed) == 8
    net = pool_net()
    assert find_groups(net, all_convs(net)) == {"c1": FusedGroup("c1", after="p1", keep_conv=False)}


def test_only_convs_run_by_tvm_take_layers_in():
    table = get_model("unet-tiny")
    groups = find_groups(table, all_convs(table) - {"enc1.conv2", "dec0.conv1"})  # e.g. given to NNPACK
    assert set(groups) == {"enc0.conv2", "dec1.conv1"}
    # depthwise and grouped convs run the grouped template: plan_fusion offers only direct ones
    mobilenet = get_model("mobilenet-v2-small")
    assert not find_groups(mobilenet, all_convs(mobilenet))  # no max pool, no resize there at all


def db_with(layer, candidates: list[tuple[ConvParams, list[float]]]) -> TuningDatabase:
    db = TuningDatabase(None, "tvm-conv2d", "local", {})  # type: ignore[arg-type] - never saved
    for params, samples in candidates:
        db.add(layer.workload_key(), layer.id, 24, Candidate(params.to_json(), samples))
    return db


def test_a_pooled_conv_gets_the_fitting_tile_with_the_lowest_median():
    layer = get_model("unet-tiny")["enc0.conv2"]
    fastest = ConvParams(8, 1, 16, "yfx_pad")  # ty=1: a row tile holds half a 2x2 window
    lucky = ConvParams(4, 2, 16, "yfx_pad")  # the lowest minimum of the fitting ones, a high median
    steady = ConvParams(2, 4, 16, "yfx_pad")
    db = db_with(layer, [(fastest, [1.0, 1.0, 1.0]), (lucky, [1.5, 9.0, 9.0]), (steady, [3.0, 3.0, 3.0])])
    assert db.best_params(layer.workload_key()) == fastest.to_json()
    assert pool_tile(layer, 2, db, 16, 32) == (steady, True)
    # nothing fitting measured: the template's default among the fitting tiles, untuned
    tile, tuned = pool_tile(layer, 2, db_with(layer, [(fastest, [1.0])]), 16, 32)
    assert not tuned and tile.ty % 2 == 0 and tile.order == "yfx_pad"


def test_plan_fusion_refits_only_tiles_that_cannot_hold_the_windows():
    table = get_model("unet-tiny")
    fits, half = ConvParams(4, 2, 16, "yfx_pad"), ConvParams(8, 1, 16, "yfx_pad")
    choices = {layer.id: half for layer in table.convs}
    choices["enc1.conv2"] = fits
    impls = {lid: "tvm" for lid in choices}
    db = db_with(table["enc0.conv2"], [(half, [1.0]), (ConvParams(2, 4, 16, "yfx_pad"), [2.0])])
    fusion = plan_fusion(table, choices, impls, db, 16, 32, ":untuned")
    assert fusion.groups == UNET_TINY_GROUPS and fusion.absorbed == ABSORBED
    assert choices["enc0.conv2"] == ConvParams(2, 4, 16, "yfx_pad") and impls["enc0.conv2"] == "tvm"
    assert choices["enc1.conv2"] == fits and impls["enc1.conv2"] == "tvm"  # already fits: as tuned
    assert choices["dec0.conv1"] == half  # a resize before a conv needs no particular tile
    assert set(fusion.refitted) == {"enc0.conv2"}
    labels = fusion.label(impls)
    assert labels["enc0.conv2"] == "tvm (+enc0.pool fused in)" and labels["dec0.conv1"] == "tvm (+dec0.up fused in)"
    assert labels["enc0.pool"] == "tvm:fused into enc0.conv2" and labels["dec0.up"] == "tvm:fused into dec0.conv1"


def context(table: LayerTable, device, tmp_path, **options) -> BuildContext:
    return BuildContext(table, make_weights(table), device, {"tuning_dir": tmp_path, **options}, device.cores)


def layer_primfuncs(build_name: str, ctx: BuildContext) -> dict:
    from harness.builds.tvm_common import primfuncs

    return primfuncs(get_build(build_name).plan(ctx).mod)


def test_the_fused_build_matches_the_reference_and_reports_absorbed_layers(table, device, tmp_path):
    out = run(RunRequest(table, device, ["tvm"], Settings(0, 2), {"tvm": {"tuning_dir": tmp_path, "fuse": "all"}}))
    b = out["builds"][0]
    assert b["status"] == "ok", b["message"]
    assert b["max_rel_error"] <= b["tolerance"]
    by_id = {layer["id"]: layer for layer in b["layers"]}
    for lid, conv in ABSORBED.items():
        assert by_id[lid]["samples_ms"] == [0.0, 0.0] and by_id[lid]["impl"] == f"tvm:fused into {conv}"
        assert by_id[conv]["median_ms"] > 0 and by_id[conv]["impl"] == f"tvm:untuned (+{lid} fused in)"
    assert by_id["enc0.conv1"]["impl"] == "tvm:untuned"
    assert ("4 layer(s) fused by TVM into another layer's kernel, timed 0 there: enc0.pool into enc0.conv2, "
            "enc1.pool into enc1.conv2, dec1.up into dec1.conv1, dec0.up into dec0.conv1") in b["notes"]


def test_the_fused_module_has_one_kernel_per_group(table, device, tmp_path):
    import tvm

    funcs = layer_primfuncs("tvm", context(table, device, tmp_path, fuse="all"))
    assert set(funcs) == {lid.replace(".", "__") for lid in table.ids if lid not in ABSORBED}
    pooled = funcs["enc0__conv2"]
    assert len(pooled.params) == 5  # input, weight, bias; the conv's map (the skip) and the pool's
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": pooled}))
    outer = sch.get_loops(sch.get_sblock("pool_max"))[0]
    assert sch.get(outer).kind == tvm.tirx.ForKind.PARALLEL  # pooled per row tile, in the conv's loop
    assert sch.get(sch.get_loops(sch.get_sblock("conv2d_nchw_update"))[0]).same_as(sch.get(outer))
    resized = tvm.s_tir.Schedule(tvm.IRModule({"main": funcs["dec0__conv1"]}))
    blocks = [resized.get(b).name_hint for b in resized.get_child_blocks(resized.get_sblock("root"))]
    # resize, add and relu inlined into the padding: the blocks of an unfused conv, no more
    assert blocks == ["pad_temp", "conv2d_nchw_init", "conv2d_nchw_update", blocks[-1]]
    assert len(funcs["dec0__conv1"].params) == 5  # the coarse map, the skip, weight, bias; out


def test_a_pool_whose_conv_no_one_else_reads_writes_only_the_pool(device, tmp_path):
    net = pool_net()
    ctx = context(net, device, tmp_path)
    funcs = layer_primfuncs("tvm", ctx)
    assert "p1" not in funcs and "p2" in funcs and len(funcs["c1"].params) == 4  # x, weight, bias; pool
    exe = get_build("tvm").compile(ctx)
    x = make_input(net)
    assert relative_error(exe.run(x), reference_output(net, ctx.weights, x)) < 1e-4
    _, times = exe.run_timed(x, time.perf_counter_ns)
    assert times["p1"] == 0 and times["c1"] > 0 and times["p2"] > 0
    assert exe.impl("c1") == "tvm:untuned (+p1 fused in)"


def test_the_template_refuses_a_tile_that_splits_pooling_windows(table, device, tmp_path):
    from harness.builds.tvm_common import lower, make_target, primfuncs, schedule_primfunc
    from harness.builds.tvm_relax import emit_relax
    from harness.tuning.conv_direct import schedule_conv

    emitted = emit_relax(table, make_weights(table), fused={"enc0.conv2": UNET_TINY_GROUPS["enc0.conv2"]})
    func = primfuncs(lower(emitted.mod, make_target(device)))["enc0__conv2"]
    with pytest.raises(ValueError, match="whole 2x2 pooling windows"):
        schedule_primfunc(func, lambda sch: schedule_conv(sch, ConvParams(8, 1, 16, "yfx_pad"), 2))
    with pytest.raises(ValueError, match="give its stride"):
        schedule_primfunc(func, lambda sch: schedule_conv(sch, ConvParams(4, 2, 16, "yfx_pad")))
    schedule_primfunc(func, lambda sch: schedule_conv(sch, ConvParams(4, 2, 16, "fyx"), 2))


def test_the_default_fuses_pools_only_and_a_bad_choice_is_one_clear_error(table, device, tmp_path):
    """Measured on the Zen 5, the resize fusions lose 4-19 % per group (tvm_fusion's docstring):
    by default only pools are fused; "fuse" takes "all", "pools", "none", true or false."""
    from harness.builds.tvm_fusion import fusion_kinds
    from harness.errors import UserError

    plan = get_build("tvm").plan(context(table, device, tmp_path))
    assert plan.absorbed == {lid: conv for lid, conv in ABSORBED.items() if ".pool" in lid}
    assert fusion_kinds({"fuse": True}) == fusion_kinds({"fuse": "all"}) == {"pool", "resize"}
    assert fusion_kinds({"fuse": False}) == fusion_kinds({"fuse": "none"}) == set()
    with pytest.raises(UserError, match='"fuse": \'some\' is not one of'):
        fusion_kinds({"fuse": "some"})


def test_fusion_off_gives_one_kernel_per_layer(table, device, tmp_path):
    from harness.builds.tvm_common import compile_module, make_target, primfuncs
    from harness.builds.tvm_vm import VMExecutable

    ctx = context(table, device, tmp_path, fuse=False)
    plan = get_build("tvm").plan(ctx)
    assert set(primfuncs(plan.mod)) == {lid.replace(".", "__") for lid in table.ids}
    assert plan.absorbed == {} and not any("fused by TVM" in note for note in plan.notes)
    assert {plan.impls[lid] for lid in ABSORBED} == {"tvm"}
    module = compile_module(plan.mod, make_target(device))
    exe = VMExecutable(module, plan.params, table.ids, plan.impls)
    x = make_input(table)
    assert relative_error(exe.run(x), reference_output(table, ctx.weights, x)) < 1e-4
    _, times = exe.run_timed(x, time.perf_counter_ns)
    assert all(times[lid] > 0 for lid in table.ids)
    # a fusion map that the module does not have is an error, not a silent 0
    wrong = VMExecutable(module, plan.params, table.ids, plan.impls, absorbed={"enc0.pool": "enc0.conv2"})
    with pytest.raises(RuntimeError, match="enc0.pool"):
        wrong.run_timed(x, time.perf_counter_ns)


def test_the_hybrid_fuses_nothing_into_an_nnpack_conv(table, device, tmp_path):
    force = {"enc1.conv2": "nnpack:wt8x8/precompute", "dec0.conv1": "nnpack:ft8x8/compute"}
    out = run(RunRequest(table, device, ["tvm-nnpack"], Settings(0, 2),
                         {"tvm-nnpack": {"tuning_dir": tmp_path, "force": force, "fuse": "all"}}))
    b = out["builds"][0]
    assert b["status"] == "ok", b["message"]
    by_id = {layer["id"]: layer for layer in b["layers"]}
    for lid, impl in force.items():
        assert by_id[lid]["impl"] == impl  # no "(+... fused in)"
    for lid in ("enc1.pool", "dec0.up"):  # their own TVM kernels beside the NNPACK convs
        assert by_id[lid]["impl"] == "tvm" and by_id[lid]["median_ms"] > 0
    for lid in ("enc0.pool", "dec1.up"):  # still fused where the conv is TVM's
        assert by_id[lid]["impl"] == f"tvm:fused into {ABSORBED[lid]}" and by_id[lid]["median_ms"] == 0
    assert "2 layer(s) fused by TVM" in " ".join(b["notes"])


def test_an_exported_fused_module_loads_with_its_fusion_map(table, device, tmp_path):
    weights = make_weights(table)
    ctx = BuildContext(table, weights, device, {"tuning_dir": tmp_path / "tuning", "fuse": "all"}, device.cores)
    get_build("tvm").export(ctx, tmp_path / "tvm")
    assert json.loads((tmp_path / "tvm" / "manifest.json").read_text())["absorbed"] == ABSORBED
    exe = get_build("tvm").load(BuildContext(table, make_weights(table), device, {}, device.cores), tmp_path / "tvm")
    x = make_input(table)
    out, times = exe.run_timed(x, time.perf_counter_ns)
    assert relative_error(out, reference_output(table, weights, x)) < 1e-4
    assert {lid for lid, ns in times.items() if ns == 0} == set(ABSORBED)
    assert exe.impl("enc0.pool") == "tvm:fused into enc0.conv2"
    assert np.array_equal(out, exe.run(x))


def test_a_layer_timed_0_has_no_speedup_on_the_report(tiny_result, tmp_path):
    from harness.report.view import run_view

    doc = json.loads(tiny_result.read_text())
    torch_build = next(b for b in doc["builds"] if b["name"] == "torch")
    pool = next(layer for layer in torch_build["layers"] if layer["id"] == "enc0.pool")
    pool.update(samples_ms=[0.0] * len(pool["samples_ms"]), median_ms=0.0, gflops=0.0, pct_peak=0.0,
                impl="tvm:fused into enc0.conv2")  # as the tvm build reports an absorbed layer
    edited = tmp_path / "fused.json"
    edited.write_text(json.dumps(doc))
    rows = {row.layer["id"]: row for row in run_view([edited], baseline="caffe2-nnpack").rows}
    assert rows["enc0.pool"].cells["torch"].speedup is None  # not an infinite "most improved"
    assert "most improved" not in rows["enc0.pool"].cells["torch"].marks
    assert rows["enc0.conv2"].cells["torch"].speedup is not None


def test_the_saving_script_measures_every_group(tmp_path, monkeypatch):
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("fusion_saving", REPO / "scripts" / "fusion_saving.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fusion_saving", script)  # its dataclasses look themselves up there
    spec.loader.exec_module(script)
    out = tmp_path / "saving.json"
    assert script.main(["--model", "unet-tiny", "--rounds", "2", "--repeats", "2", "--tuning-dir", str(tmp_path),
                        "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {row["conv"]: row["absorbed"] for row in doc["groups"]} == {
        conv: [lid for lid, into in ABSORBED.items() if into == conv] for conv in UNET_TINY_GROUPS}
    for row in doc["groups"]:
        assert row["unfused_ms"] == pytest.approx(row["unfused_conv_ms"] + sum(row["unfused_absorbed_ms"].values()))
        assert row["saving_ms"] == pytest.approx(row["unfused_ms"] - row["fused_ms"])
        assert row["verdict"] in ("faster", "slower", "same")
    assert all(len(doc["samples_ns"][v]["e2e"]) == 4 for v in ("fused", "unfused"))

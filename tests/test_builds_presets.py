"""Every build runs every network preset: real NNPACK, real TVM compiles, small presets.

One in-process run per preset with all four builds (one compile each, one repeat, no warm-up)
is shared by the tests of that preset; the runner itself fails a build whose output is off the
fp32 reference by more than its tolerance, so `status == "ok"` is the accuracy check.
Tuning databases point at an empty directory: every TVM kernel is the template's default,
so the labels do not depend on what this machine tuned before.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.builds.nnpack_layers import accepts, conv_shape, layer_rule
from harness.kernels import nnpack
from harness.kernels.nnpack import Algorithm, ConvShape, Strategy
from harness.model import get_model
from harness.model.layers import CONV, INPUT, MAXPOOL_RELU, RESIZE_ADD_RELU, Layer, TableBuilder
from harness.runner.measure import Settings
from harness.runner.run import RunRequest, run

SMALL_PRESETS = ["resnet18-small", "mobilenet-v2-small", "squeezenet1.1-small", "shufflenet-v2-small"]
BUILDS = ["caffe2-nnpack", "tvm", "tvm-nnpack", "fp16-winograd"]
TVM_BUILDS = ("tvm", "tvm-nnpack", "fp16-winograd")
WITH_DEPTHWISE = {"mobilenet-v2-small", "shufflenet-v2-small"}
NO_GROUPS = "(nnpack: no grouped conv)"


@pytest.fixture(scope="module", params=SMALL_PRESETS)
def preset_run(request, device, tmp_path_factory):
    table = get_model(request.param)
    tuning = tmp_path_factory.mktemp("tuning")
    options = {name: {"tuning_dir": tuning} for name in TVM_BUILDS}
    out = run(RunRequest(table, device, BUILDS, Settings(warmup=0, repeats=1), options))
    return table, {b["name"]: b for b in out["builds"]}


@pytest.mark.parametrize("build", BUILDS)
def test_the_build_runs_the_preset_within_its_tolerance_with_the_tables_layer_ids(preset_run, build):
    table, builds = preset_run
    b = builds[build]
    assert b["status"] == "ok", b["message"]
    assert b["max_rel_error"] <= b["tolerance"]
    assert [layer["id"] for layer in b["layers"]] == table.ids
    assert all(layer["median_ms"] > 0 for layer in b["layers"])


def test_caffe2_nnpack_runs_nnpack_where_it_can_and_says_why_not_elsewhere(preset_run):
    table, builds = preset_run
    impls = {layer["id"]: layer["impl"] for layer in builds["caffe2-nnpack"]["layers"]}
    depthwise = [layer for layer in table.convs if layer.depthwise]
    assert bool(depthwise) == (table.config.name in WITH_DEPTHWISE)
    for layer in table.convs:
        if layer.depthwise:
            assert impls[layer.id] == f"aten:depthwise {NO_GROUPS}"
        else:  # NNPACK takes every ungrouped conv of these nets, strided ones by implicit GEMM
            assert impls[layer.id].startswith("nnpack:"), (layer.id, impls[layer.id])
            if layer.stride > 1:
                assert impls[layer.id] == "nnpack:implicit_gemm/compute (auto)"
    assert all(impls[layer.id] == "aten" for layer in table if layer.op != CONV)


def test_tvm_nnpack_runs_tvm_where_nnpack_cannot_and_says_why(preset_run):
    table, builds = preset_run
    impls = {layer["id"]: layer["impl"] for layer in builds["tvm-nnpack"]["layers"]}
    for layer in table.convs:
        if layer.depthwise:
            assert impls[layer.id] == f"tvm:depthwise:untuned {NO_GROUPS}"
        else:  # no hybrid choice recorded: TVM's untuned kernel
            assert impls[layer.id] == "tvm:untuned"
    tvm_impls = {layer["id"]: layer["impl"] for layer in builds["tvm"]["layers"]}
    assert {tvm_impls[layer.id] for layer in table.convs if layer.depthwise} <= {"tvm:depthwise:untuned"}
    assert {tvm_impls[layer.id] for layer in table if layer.op != CONV} == {"tvm"}


def test_fp16_winograd_uses_winograd_only_for_3x3_stride_1_convs(preset_run):
    table, builds = preset_run
    impls = {layer["id"]: layer["impl"] for layer in builds["fp16-winograd"]["layers"]}
    for layer in table.convs:
        impl = impls[layer.id]
        if layer.kernel != (3, 3) or layer.stride != 1 or layer.groups != 1:
            assert "winograd" not in impl, (layer.id, impl)
            assert impl.startswith("direct"), (layer.id, impl)
        if layer.depthwise:
            assert impl.split(":untuned")[0] in ("direct:depthwise/fp16-storage", "direct-fp16:depthwise")
    if table.config.name == "resnet18-small":  # 3x3 stride-1 convs of 64+ channels on planes of 16 ... 2
        assert impls["layer1.0.conv1"].startswith("winograd")
    assert {impls[layer.id] for layer in table if layer.op != CONV and layer.op not in (MAXPOOL_RELU, RESIZE_ADD_RELU)} \
        == {"tvm-fp16"}


# NNPACK's own rules (src/convolution-inference.c), as harness.kernels.nnpack states them, against
# what nnp_convolution_inference actually does here: a rule that says no must meet a failure
# status, one that says yes a correct output (`direct` excepted: it reports success on x86
# without computing, which is why every NNPACK layer is checked before it is used).

RULE_SHAPES = [
    ConvShape(8, 16, 12, 12, (3, 3), 1, 1), ConvShape(8, 16, 12, 12, (3, 3), 1, 2),
    ConvShape(8, 16, 12, 12, (1, 1), 0, 1), ConvShape(8, 16, 12, 12, (1, 1), 0, 2),
    ConvShape(3, 8, 20, 20, (7, 7), 3, 2), ConvShape(4, 8, 20, 20, (5, 5), 2, 1),
]


def _nnpack_result(shape: ConvShape, algorithm: Algorithm, strategy: Strategy, pool) -> str:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, shape.in_channels, shape.height, shape.width)).astype(np.float32)
    w = rng.standard_normal((shape.out_channels, shape.in_channels, *shape.kernel)).astype(np.float32)
    b = rng.standard_normal(shape.out_channels).astype(np.float32)
    try:
        out = nnpack.Conv2d(shape, w, b, algorithm, strategy, pool=pool)(x)
    except nnpack.NNPACKError as exc:
        return f"status {exc.status}"
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), shape.stride, shape.padding).numpy()
    return "ok" if np.allclose(out, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max()) else "wrong"


@pytest.mark.parametrize("shape", RULE_SHAPES, ids=lambda s: f"{s.kernel[0]}x{s.kernel[1]}s{s.stride}")
def test_the_nnpack_rules_agree_with_nnpack(shape):
    pool = nnpack.ThreadPool(2)
    for algorithm in nnpack.CANDIDATE_ALGORITHMS:
        for strategy in (Strategy.compute, Strategy.precompute):
            rule = nnpack.algorithm_rule(shape, algorithm, strategy)
            got = _nnpack_result(shape, algorithm, strategy, pool)
            if rule is not None:
                assert got.startswith("status"), (algorithm.name, strategy.name, rule, got)
            elif algorithm != Algorithm.direct:
                assert got == "ok", (algorithm.name, strategy.name, got)
    auto = _nnpack_result(shape, Algorithm.auto, Strategy.compute, pool)
    assert auto == ("wrong" if nnpack.auto_choice(shape) == Algorithm.direct and not nnpack.is_arm() else "ok")


def test_no_nnpack_algorithm_takes_a_grouped_conv_and_the_hybrid_offers_none():
    from harness.builds.tvm_nnpack import candidate_impls

    b = TableBuilder((1, 16, 8, 8))
    dw = b.conv("dw", INPUT, 16, 3, stride=2, padding=1, groups=16)
    strided = b.conv("s2", dw, 8, 3, stride=2, padding=1)
    table = {layer.id: layer for layer in b.layers}
    assert layer_rule(table["dw"]) == "no grouped conv"
    assert candidate_impls(table["dw"]) == ["tvm"]
    strided_nnpack = set(candidate_impls(table[strided])) - {"tvm"}
    assert strided_nnpack >= {"nnpack:implicit_gemm/compute", "nnpack:implicit_gemm/precompute"}
    assert all(accepts(table[strided], *_algo_strategy(i)) for i in strided_nnpack)
    if not nnpack.is_arm():
        assert strided_nnpack == {"nnpack:implicit_gemm/compute", "nnpack:implicit_gemm/precompute"}


def _algo_strategy(impl: str) -> tuple[Algorithm, Strategy]:
    algo, strategy = impl.removeprefix("nnpack:").split("/")
    return Algorithm[algo], Strategy[strategy]


def test_tuning_a_new_network_covers_its_depthwise_and_1x1_workloads(device, tmp_path):
    from harness.builds.tvm_common import make_target, simd_lanes, target_dict
    from harness.builds.tvm_nnpack import hybrid_tasks
    from harness.tuning.database import load_database
    from harness.tuning.search import Budget, run_search
    from harness.tuning.tasks import tvm_conv_tasks

    table = get_model("mobilenet-v2-small")
    db = load_database(device, "tvm-conv2d", target_dict(device), tmp_path)
    tasks = tvm_conv_tasks(table, device, make_target(device), simd_lanes(device))
    assert len(tasks) == len({layer.workload_key() for layer in table.convs})
    picked = [next(t for t in tasks if t.layer.depthwise), next(t for t in tasks if t.layer.kernel == (1, 1))]
    assert picked[0].space[0]["template"] == "grouped" and "tf" in picked[1].space[0]
    assert run_search(db, picked, Budget(trials=1))
    for task in picked:
        assert db.records[task.workload].best() is not None, db.records[task.workload].candidates

    hybrid = load_database(device, "tvm-nnpack", target_dict(device), tmp_path)
    workloads = {t.layer.id for t in hybrid_tasks(table, device, hybrid, tmp_path)}
    assert workloads and not any(table[lid].depthwise for lid in workloads)


def test_conv_shape_carries_the_layers_stride_and_padding():
    layer: Layer = get_model("resnet18-small")["conv1"]
    shape = conv_shape(layer)
    assert (shape.kernel, shape.stride, shape.padding) == ((7, 7), 2, 3)
    assert (shape.out_height, shape.out_width) == layer.out_shape[2:]


def test_forcing_nnpack_onto_a_depthwise_layer_is_refused_before_compiling(device, tmp_path):
    from harness.builds.base import BuildContext
    from harness.builds.tvm_nnpack import TVMNNPACKBuild
    from harness.errors import UserError
    from harness.model.weights import make_weights

    table = get_model("mobilenet-v2-small")
    force = {"features.1.dw": "nnpack:implicit_gemm/compute"}
    ctx = BuildContext(table, make_weights(table), device, {"force": force, "tuning_dir": tmp_path}, 2)
    with pytest.raises(UserError, match=r"'features.1.dw' cannot be forced to nnpack:implicit_gemm/compute: "
                                        r"nnpack: no grouped conv"):
        TVMNNPACKBuild().plan(ctx)


@pytest.mark.parametrize(("build", "impl", "tag"), [
    ("fp16-winograd", "direct:depthwise/fp16-storage", None),  # a 3x3 the build's Winograd does not take
    ("fp16-winograd", "winograd:F4x4/fp16-storage", "Winograd"),
    ("caffe2-nnpack", f"aten:depthwise {NO_GROUPS}", None),
    ("caffe2-nnpack", "nnpack:implicit_gemm/compute (auto)", None),
    ("tvm-nnpack", f"tvm:depthwise:untuned {NO_GROUPS}", None),
])
def test_reports_credit_fast_algorithms_only_to_layers_that_ran_one(build, impl, tag):
    from harness.report.view import fast_algorithm

    assert fast_algorithm(build, {"op": "conv2d", "impl": impl, "kernel": [3, 3]}) == tag

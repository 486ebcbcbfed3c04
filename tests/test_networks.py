"""The ImageNet presets against torchvision's own models, and the general ops of the layer table.

torchvision's models have BatchNorm after their convolutions; the tables fold it into the
conv's weights and bias. To compare outputs, torchvision's model gets the table's weights and
BatchNorms that compute `x + bias`, so both must compute the same function exactly (up to
fp32 reordering) if the table lays out the same network.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness.builds import get_build
from harness.builds.base import relative_error
from harness.model import PRESETS, get_model
from harness.model.layers import (CONV, INPUT, LINEAR, OP_KINDS, RELU, RELU6, LayerTable, ModelConfig, TableBuilder,
                                  build_layer_table, pool_out)
from harness.model.tablenet import TableNet, run_layers
from harness.model.weights import ConvWeights, make_input, make_weights
from tests.conftest import REPO, run_cli
from tests.torchvision_models import torchvision_models

tv = torchvision_models()

# Each classifier preset and the torchvision model it must equal.
TORCHVISION: dict[str, Callable[[], nn.Module]] = {
    "resnet18": tv.resnet18,
    "resnet18-small": tv.resnet18,
    "mobilenet-v2": tv.mobilenet_v2,
    "mobilenet-v2-small": lambda: tv.mobilenet_v2(width_mult=0.5),
    "squeezenet1.1": tv.squeezenet1_1,
    "squeezenet1.1-small": tv.squeezenet1_1,
    "shufflenet-v2": tv.shufflenet_v2_x1_0,
    "shufflenet-v2-small": tv.shufflenet_v2_x0_5,
}
SMALL = [name for name in TORCHVISION if name.endswith("-small")]


def test_every_classifier_preset_has_a_torchvision_equivalent():
    assert set(TORCHVISION) == {name for name in PRESETS if not name.startswith("unet")}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_flops_and_output_agree_with_torchvision(name):
    """FlopCounterMode counts convolutions and matrix products (2 x MACs), BatchNorm never."""
    table = get_model(name)
    model = TORCHVISION[name]().eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        out = model(torch.zeros(table.config.input_shape))
    assert counter.get_total_flops() == table.conv_linear_flops
    assert tuple(out.shape) == table.layers[-1].out_shape == (1, 1000)


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_each_conv_and_linear_has_torchvision_shapes_in_execution_order(name):
    table = get_model(name)
    model = TORCHVISION[name]().eval()
    seen: list[tuple] = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(
                lambda m, args, out: seen.append((tuple(m.weight.shape), args[0].numel(), tuple(out.shape))))
    with torch.inference_mode():
        model(torch.zeros(table.config.input_shape))
    # Input sizes as element counts: the table's linear layers flatten their NCHW input themselves.
    ours = [(layer.weight_shape, math.prod(layer.in_shape), layer.out_shape) for layer in table.weighted]
    assert ours == seen


def load_table_weights(model: nn.Module, table: LayerTable, weights: dict[str, ConvWeights]) -> None:
    """Give a torchvision model the table's weights. Its convs and linears are registered in
    execution order, each BatchNorm after its conv; a BatchNorm becomes `x + the conv's bias`."""
    layers = iter(table.weighted)
    pending_bias = None
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                w = weights[next(layers).id]
                module.weight.copy_(torch.from_numpy(w.weight))
                if module.bias is not None:
                    module.bias.copy_(torch.from_numpy(w.bias))
                else:
                    pending_bias = w.bias
            elif isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
                module.weight.fill_(math.sqrt(1.0 + module.eps))  # cancels the 1 / sqrt(var + eps)
                module.bias.copy_(torch.from_numpy(pending_bias))
                pending_bias = None
    assert next(layers, None) is None, "the table has more weighted layers than the model"


@pytest.mark.parametrize("name", SMALL)
def test_tablenet_computes_what_torchvision_computes(name):
    table = get_model(name)
    weights = make_weights(table)
    model = TORCHVISION[name]().eval()
    load_table_weights(model, table, weights)
    x = torch.from_numpy(make_input(table))
    with torch.inference_mode():
        ours, theirs = TableNet(table, weights)(x).numpy(), model(x).numpy()
    assert ours.shape == theirs.shape == (1, 1000)
    assert float(np.std(theirs)) > 0.01  # a real signal reached the classifier
    assert relative_error(ours, theirs) < 1e-5


@pytest.mark.parametrize("name", SMALL)
def test_every_layer_of_a_small_preset_runs_with_its_table_shape(name):
    table = get_model(name)
    net = TableNet(table)
    with torch.inference_mode():
        for layer, out in run_layers(table, net.layer_fns(), torch.from_numpy(make_input(table))):
            assert tuple(out.shape) == layer.out_shape, layer.id
            assert torch.isfinite(out).all(), layer.id


def test_readable_stable_layer_ids():
    assert get_model("resnet18").ids[:6] == ["conv1", "maxpool", "layer1.0.conv1", "layer1.0.conv2",
                                             "layer1.0.add", "layer1.1.conv1"]
    assert get_model("resnet18")["layer2.0.add"].inputs == ("layer2.0.conv2", "layer2.0.downsample")
    assert get_model("resnet18").output_id == "fc"
    mobilenet = get_model("mobilenet-v2")
    assert mobilenet["features.3.dw"].depthwise and mobilenet["features.3.dw"].activation == RELU6
    assert mobilenet["features.3.add"].inputs == ("features.2.project", "features.3.project")
    assert "features.1.expand" not in mobilenet.ids  # expansion 1: no expand conv
    squeeze = get_model("squeezenet1.1")
    assert squeeze["fire2.concat"].inputs == ("fire2.expand1x1", "fire2.expand3x3")
    assert squeeze.output_id == "avgpool10"
    shuffle = get_model("shufflenet-v2")
    assert shuffle["stage2.0.concat"].inputs == ("stage2.0.branch1.1x1", "stage2.0.branch2.1x1b")
    assert shuffle["stage2.1.concat"].inputs == ("stage2.1.chunk1", "stage2.1.branch2.1x1b")
    assert shuffle["stage2.1.branch2.1x1a"].inputs == ("stage2.1.chunk2",)


def test_preset_sizes_are_as_documented():
    gflops = {name: round(get_model(name).total_flops / 1e9, 3) for name in TORCHVISION}
    assert gflops == {"resnet18": 3.631, "mobilenet-v2": 0.602, "squeezenet1.1": 0.701, "shufflenet-v2": 0.29,
                      "resnet18-small": 0.297, "mobilenet-v2-small": 0.018, "squeezenet1.1-small": 0.043,
                      "shufflenet-v2-small": 0.009}


@dataclass(frozen=True)
class EveryOp(ModelConfig):
    """A made-up network with the ops no preset has (or not in this form)."""

    input_shape: tuple = (1, 8, 10, 10)

    def lay_out(self, b: TableBuilder) -> None:
        g = b.conv("grouped", INPUT, 12, (3, 1), stride=2, padding=1, groups=4, activation=RELU6)
        a = b.avgpool("avg", g, 3, stride=2, padding=1, ceil_mode=True)
        up = b.resize_nearest("up", a, 2)
        s = b.add("add", up, b.conv("pw", up, 12, 1), activation=RELU)
        sh = b.channel_shuffle("shuffle", s, 3)
        half = b.channel_slice("half", sh, 4, 10)
        p = b.global_avgpool("pool", half)
        h = b.linear("fc1", p, 5, activation=RELU)
        b.linear("fc2", h, 3)


def test_every_op_runs_with_its_table_shape_and_flop_count():
    table = build_layer_table(EveryOp("every-op"))
    assert {layer.op for layer in table} == {"conv2d", "avgpool", "resize_nearest", "add", "channel_shuffle",
                                             "channel_slice", "global_avgpool", "linear"}
    fns = TableNet(table).layer_fns()
    acts = {INPUT: torch.from_numpy(make_input(table))}
    for layer in table:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            out = fns[layer.id](*(acts[src] for src in layer.inputs))
        acts[layer.id] = out
        assert tuple(out.shape) == layer.out_shape, layer.id
        if layer.op in (CONV, LINEAR):
            assert counter.get_total_flops() == layer.flops, layer.id
    grouped = table["grouped"]
    assert grouped.out_shape == (1, 12, 5, 6) and grouped.weight_shape == (12, 2, 3, 1)
    assert grouped.flops == 2 * (12 * 5 * 6) * (2 * 3 * 1)  # each output reads 8 / 4 groups x 3 x 1
    assert table["fc1"].flatten and not table["fc2"].flatten and table["fc1"].weight_shape == (5, 6)
    assert [table[lid].flops for lid in ("avg", "add", "shuffle", "half", "pool")] == \
        [(12 * 3 * 4) * 9, 2 * (12 * 6 * 8), 0, 0, 6 * 6 * 8]


def test_channel_shuffle_and_slice_are_torchvisions():
    x = torch.arange(2 * 6 * 2 * 2, dtype=torch.float32).reshape(2, 6, 2, 2)
    b = TableBuilder(tuple(x.shape))
    b.channel_shuffle("s", INPUT, 2)
    b.channel_slice("c", "s", 3, 6)
    table = LayerTable(EveryOp("x", tuple(x.shape)), tuple(b.layers))
    fns = TableNet(table).layer_fns()
    shuffled = fns["s"](x)
    assert torch.equal(shuffled, tv.shufflenetv2.channel_shuffle(x, 2))
    assert torch.equal(fns["c"](shuffled), shuffled.chunk(2, dim=1)[1])


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("padding", [0, 1])
def test_pool_output_size_is_pytorchs(ceil_mode, padding):
    for size in range(3, 20):
        for stride in (1, 2, 3):
            out = torch.nn.functional.max_pool2d(torch.zeros(1, 1, size, size), 3, stride, padding, ceil_mode=ceil_mode)
            assert pool_out(size, 3, stride, padding, ceil_mode) == out.shape[-1], (size, stride)


def test_bytes_count_every_input_weight_and_output_once():
    shuffle = get_model("shufflenet-v2")
    concat = shuffle["stage3.0.concat"]  # two 116-channel halves at 14x14
    assert concat.bytes == 4 * (2 * 116 * 14 * 14 + 232 * 14 * 14)
    dw = shuffle["stage3.0.branch2.dw"]  # 116 channels, 28x28 -> 14x14, one 3x3 filter each
    assert dw.bytes == 4 * (116 * 28 * 28 + 116 * 9 + 116 + 116 * 14 * 14)
    fc = get_model("resnet18")["fc"]
    assert fc.bytes == 4 * (512 + 512 * 1000 + 1000 + 1000)


def test_table_builder_refuses_malformed_networks():
    b = TableBuilder((1, 4, 8, 8))
    b.conv("a", INPUT, 6, 3, padding=1)
    with pytest.raises(ValueError, match="used twice"):
        b.conv("a", INPUT, 6, 3)
    with pytest.raises(ValueError, match="not laid out"):
        b.conv("b", "nowhere", 6, 3)
    with pytest.raises(ValueError, match="groups must divide"):
        b.conv("c", INPUT, 6, 3, groups=3)
    with pytest.raises(ValueError, match="adds"):
        b.add("d", INPUT, "a")
    with pytest.raises(ValueError, match="empty"):
        b.conv("e", INPUT, 4, 9)


def test_the_result_schema_knows_every_op():
    schema = json.loads((REPO / "harness/results/schema.json").read_text())
    assert set(schema["$defs"]["layer"]["properties"]["op"]["enum"]) == set(OP_KINDS)


@pytest.mark.parametrize("build", ["caffe2-nnpack", "tvm", "tvm-nnpack", "fp16-winograd", "torch"])
def test_every_build_takes_every_preset(build):
    # Build.supports stays for builds that cannot run some layers; these five run them all
    # (tests/test_builds_presets.py runs them).
    assert all(get_build(build).unsupported(get_model(name)) is None for name in PRESETS)


@pytest.mark.slow
def test_a_run_of_a_new_network_from_the_command_line(tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("run", "--model", "resnet18-small", "--builds", "torch,caffe2-nnpack,tvm",
                   "--repeats", "3", "--warmup", "1", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    builds = {b["name"]: b for b in doc["builds"]}
    assert builds["torch"]["status"] == "ok" and builds["torch"]["max_rel_error"] < 1e-6
    assert [layer["id"] for layer in builds["torch"]["layers"]] == get_model("resnet18-small").ids
    for name in ("caffe2-nnpack", "tvm"):
        assert builds[name]["status"] == "ok", builds[name]["message"]
        assert [layer["id"] for layer in builds[name]["layers"]] == get_model("resnet18-small").ids
    assert doc["model"]["name"] == "resnet18-small" and doc["model"]["blocks"] == [2, 2, 2, 2]
    assert "layer4.1.add" in proc.stdout

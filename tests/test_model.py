import hashlib

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.errors import UserError
from harness.model import PRESETS, get_model
from harness.model.layers import CONV, INPUT, build_layer_table
from harness.model.nets.unet import UNetConfig
from harness.model.tablenet import TableNet
from harness.model.weights import make_input, make_weights


@pytest.mark.parametrize("name", ["unet-tiny", "unet"])
def test_total_conv_flops_agree_with_torch_flop_counter(name):
    table = get_model(name)
    net = TableNet(table)
    x = torch.from_numpy(make_input(table))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(x)
    assert counter.get_total_flops() == table.conv_flops


def test_each_conv_layer_flops_agree_with_torch_flop_counter():
    table = get_model("unet-tiny")
    net = TableNet(table)
    fns = net.layer_fns()
    for layer in table.convs:
        x = torch.zeros(layer.in_shape)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            y = fns[layer.id](x)
        assert tuple(y.shape) == layer.out_shape
        assert counter.get_total_flops() == layer.flops, layer.id


def test_default_model_size_is_as_documented():
    table = get_model("unet")
    assert table.config.input_shape == (1, 3, 256, 256)
    assert round(table.total_flops / 1e9, 1) == 15.9
    assert sum(1 for layer in table if layer.op == CONV) == 19


def test_layer_ids_are_unique_and_inputs_come_first():
    for name in PRESETS:
        table = get_model(name)
        assert len(set(table.ids)) == len(table)
        seen = {INPUT}
        for layer in table:
            assert set(layer.inputs) <= seen, layer.id
            seen.add(layer.id)


def test_layer_shapes_chain_and_network_output_matches():
    table = get_model("unet-tiny")
    out = TableNet(table)(torch.from_numpy(make_input(table)))
    assert tuple(out.shape) == table.layers[-1].out_shape
    for layer in table:
        if layer.inputs[0] != INPUT:
            assert table[layer.inputs[0]].out_shape == layer.in_shape


def test_the_blocks_of_the_study_are_present():
    table = get_model("unet")
    ops = {layer.op: layer.members for layer in table}
    assert ops["maxpool_relu"] == ("max_pool2d", "relu")
    assert ops["resize_add_relu"] == ("resize_nearest", "add", "relu")
    assert table["enc1.conv1"].members == ("conv2d", "bias_add", "relu")
    assert table["dec1.up"].inputs == ("dec1.conv0", "enc1.conv2")


def test_bytes_and_intensity():
    layer = get_model("unet")["enc1.conv2"]  # 64->64 3x3 at 128x128
    elems = 64 * 128 * 128
    assert layer.bytes == 4 * (2 * elems + 64 * 64 * 9 + 64)
    assert layer.arithmetic_intensity == pytest.approx(layer.flops / layer.bytes)


def test_weights_and_input_are_deterministic_and_seeded():
    table = get_model("unet-tiny")
    a, b = make_weights(table), make_weights(table)
    assert all(np.array_equal(a[k].weight, b[k].weight) for k in a)
    other = build_layer_table(UNetConfig("x", (1, 3, 32, 32), width=8, depth=2, seed=7))
    assert not np.array_equal(make_weights(other)["enc0.conv1"].weight, a["enc0.conv1"].weight)
    assert np.array_equal(make_input(table), make_input(table))


# sha256 over every conv's id, weight and bias bytes in table order, then the input's bytes, as
# the UNet-only harness generated them: the UNet's history must keep computing these numbers.
UNET_WEIGHTS_SHA256 = {
    "unet": "71661c8a1c229868b464b70d60c7bb8f494c1214ab1f0593fbd3ec36ee68370e",
    "unet-tiny": "12aa68cb5d0bd9e29c21eb114e9e2cbe743756cc1f60ddda20aeff20011e9075",
}


@pytest.mark.parametrize("name", list(UNET_WEIGHTS_SHA256))
def test_unet_weights_and_input_are_bit_identical_to_the_unet_only_harness(name):
    table = get_model(name)
    digest = hashlib.sha256()
    for layer_id, w in make_weights(table).items():
        digest.update(layer_id.encode())
        digest.update(w.weight.tobytes())
        digest.update(w.bias.tobytes())
    digest.update(make_input(table).tobytes())
    assert digest.hexdigest() == UNET_WEIGHTS_SHA256[name]


def test_unet_flops_are_the_historys():
    assert get_model("unet").total_flops == 15_941_763_072
    assert get_model("unet").conv_flops == get_model("unet").conv_linear_flops == 15_929_966_592
    assert get_model("unet-tiny").total_flops == 9_179_136


def test_configurable_width_depth_and_input():
    table = build_layer_table(UNetConfig("c", (1, 1, 48, 48), width=4, depth=3))
    assert table["mid.conv1"].out_shape == (1, 32, 6, 6)
    assert table.output_id == "head.conv"
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig("bad", (1, 3, 30, 30), depth=2)


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model 'unet-huge'"):
        get_model("unet-huge")

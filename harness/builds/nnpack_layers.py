"""The layer table's convolutions as NNPACK sees them: what NNPACK can compute, and how a
build labels a layer NNPACK cannot take (the NNPACK builds share this).

NNPACK has no channel groups, so depthwise and grouped convolutions always run elsewhere;
which algorithms accept a shape is nnpack.algorithm_rule's.
"""
from __future__ import annotations

import numpy as np

from harness.kernels import nnpack
from harness.model.layers import CONV, RELU6, Layer


def conv_shape(layer: Layer) -> nnpack.ConvShape:
    _, c_in, h, w = layer.in_shape
    return nnpack.ConvShape(c_in, layer.out_channels, h, w, layer.kernel, layer.padding, layer.stride)  # type: ignore[arg-type]


def layer_rule(layer: Layer) -> str | None:
    """Why NNPACK cannot compute this layer with any algorithm (None: it can)."""
    if layer.op != CONV:
        return "not a convolution"
    return nnpack.shape_rule(conv_shape(layer), layer.groups)


def accepts(layer: Layer, algorithm: nnpack.Algorithm, strategy: nnpack.Strategy = nnpack.Strategy.compute) -> bool:
    """Does NNPACK take this layer with this algorithm and strategy (by its own rules)?"""
    return layer_rule(layer) is None and nnpack.algorithm_rule(conv_shape(layer), algorithm, strategy) is None


def conv_kind(layer: Layer) -> str:
    """'depthwise', 'grouped' or 'conv': the word a fallback label starts with."""
    return "depthwise" if layer.depthwise else "grouped" if layer.groups > 1 else "conv"


def fallback_label(kernel: str, layer: Layer, reason: str) -> str:
    """e.g. 'aten:depthwise (nnpack: no grouped conv)': what ran, and why not NNPACK."""
    return f"{kernel}:{conv_kind(layer)} (nnpack: {reason})"


def make_conv(layer: Layer, weight: np.ndarray, bias: np.ndarray, algorithm: nnpack.Algorithm,
              strategy: nnpack.Strategy, pool: nnpack.ThreadPool | None) -> nnpack.Conv2d:
    """The layer's NNPACK convolution; ReLU fused by NNPACK, ReLU6 as a clamp of its output."""
    return nnpack.Conv2d(conv_shape(layer), weight, bias, algorithm, strategy, relu=layer.relu, pool=pool,
                         relu6=layer.activation == RELU6)

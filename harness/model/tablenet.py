"""The PyTorch network generated from a layer table, with seeded, deterministic weights.

This module is the fp32 reference every build is checked against, the source TVM imports,
and the network the `torch` build measures. Every op is one torch.nn.functional call (or
tensor op) per layer, so a build can time, or replace, each layer on its own. The weights are
plain numpy arrays (harness.model.weights) so that builds which never touch PyTorch (TVM on a
device) can load exactly the same numbers.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from harness.model.layers import (ADD, AVGPOOL, CHANNEL_SHUFFLE, CHANNEL_SLICE, CONCAT, CONV, GLOBAL_AVGPOOL, INPUT,
                                  LINEAR, MAXPOOL, MAXPOOL_RELU, NONE, RELU, RELU6, RESIZE_ADD_RELU, RESIZE_NEAREST,
                                  Layer, LayerTable, scope_key)
from harness.model.weights import ConvWeights, make_input, make_weights  # noqa: F401 - re-exported

LayerFn = Callable[..., torch.Tensor]
Activation = Callable[[torch.Tensor], torch.Tensor]

ACTIVATION_FNS: dict[str, Activation] = {NONE: lambda x: x, RELU: F.relu, RELU6: F.relu6}


def conv_fn(layer: Layer, w: torch.Tensor, b: torch.Tensor) -> LayerFn:
    act = ACTIVATION_FNS[layer.activation]
    return lambda x: act(F.conv2d(x, w, b, layer.stride, layer.padding, 1, layer.groups))


def _linear(layer: Layer, w: torch.Tensor, b: torch.Tensor) -> LayerFn:
    act = ACTIVATION_FNS[layer.activation]
    if layer.flatten:
        return lambda x: act(F.linear(torch.flatten(x, 1), w, b))
    return lambda x: act(F.linear(x, w, b))


def _unweighted(layer: Layer) -> LayerFn:
    """The function of a layer without weights."""
    act = ACTIVATION_FNS[layer.activation]
    op = layer.op
    if op == MAXPOOL_RELU:
        return lambda x: F.relu(F.max_pool2d(x, layer.kernel, layer.stride))
    if op == RESIZE_ADD_RELU:
        return lambda x, skip: F.relu(F.interpolate(x, scale_factor=2, mode="nearest") + skip)
    if op == MAXPOOL:
        return lambda x: F.max_pool2d(x, layer.kernel, layer.stride, layer.padding, ceil_mode=layer.ceil_mode)
    if op == AVGPOOL:
        return lambda x: F.avg_pool2d(x, layer.kernel, layer.stride, layer.padding, ceil_mode=layer.ceil_mode)
    if op == GLOBAL_AVGPOOL:
        if layer.flatten:
            return lambda x: torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return lambda x: F.adaptive_avg_pool2d(x, 1)
    if op == ADD:
        return lambda a, b: act(a + b)
    if op == CONCAT:
        return lambda *xs: torch.cat(xs, 1)
    if op == CHANNEL_SHUFFLE:
        return lambda x: F.channel_shuffle(x, layer.groups)
    if op == CHANNEL_SLICE:
        start, stop = layer.channels  # type: ignore[misc]
        return lambda x: x[:, start:stop]  # a view, as torch.chunk's halves are
    if op == RESIZE_NEAREST:
        scale = layer.out_shape[2] // layer.in_shape[2]
        return lambda x: F.interpolate(x, scale_factor=scale, mode="nearest")
    raise ValueError(f"unknown op {op!r} in layer {layer.id!r}")


class TableNet(nn.Module):
    """Runs the layer table in order; `layer_fns` exposes each layer for per-layer timing."""

    def __init__(self, table: LayerTable, weights: dict[str, ConvWeights] | None = None):
        super().__init__()
        self.table = table
        weights = weights if weights is not None else make_weights(table)
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        for layer in table.weighted:
            key = scope_key(layer.id)
            self.weights[key] = nn.Parameter(torch.from_numpy(weights[layer.id].weight).clone(), requires_grad=False)
            self.biases[key] = nn.Parameter(torch.from_numpy(weights[layer.id].bias).clone(), requires_grad=False)
        self.eval()

    def layer_fn(self, layer: Layer) -> LayerFn:
        if layer.op in (CONV, LINEAR):
            key = scope_key(layer.id)
            make = conv_fn if layer.op == CONV else _linear
            return make(layer, self.weights[key], self.biases[key])
        return _unweighted(layer)

    def layer_fns(self) -> dict[str, LayerFn]:
        return {layer.id: self.layer_fn(layer) for layer in self.table}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for _, out in run_layers(self.table, self.layer_fns(), x):
            pass
        return out


def run_layers(table: LayerTable, fns: dict[str, LayerFn], x: torch.Tensor
               ) -> Iterator[tuple[Layer, torch.Tensor]]:
    """Execute the table with the given per-layer functions, yielding after each layer.

    The generator form lets a caller time each layer (clock before resuming, clock after the
    yield) without the executor knowing about clocks. Activations are dropped as soon as the
    last layer reading them has run, as a real runtime would.
    """
    last_use = {}
    for i, layer in enumerate(table):
        for src in layer.inputs:
            last_use[src] = i
    acts: dict[str, torch.Tensor] = {INPUT: x}
    for i, layer in enumerate(table):
        out = fns[layer.id](*(acts[src] for src in layer.inputs))
        for src in set(layer.inputs):
            if last_use[src] == i:
                del acts[src]
        acts[layer.id] = out
        yield layer, out

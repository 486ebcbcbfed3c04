"""The PyTorch UNet generated from the layer table, with seeded, deterministic weights.

This module is the fp32 reference every build is checked against, the source TVM imports,
and the network the `torch` build measures. The weights are plain numpy arrays so that builds
which never touch PyTorch (TVM on a device) can load exactly the same numbers.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from harness.model.layers import CONV, INPUT, MAXPOOL_RELU, RESIZE_ADD_RELU, Layer, LayerTable
from harness.model.weights import ConvWeights, make_input, make_weights  # noqa: F401 - re-exported

LayerFn = Callable[..., torch.Tensor]


def _module_key(layer_id: str) -> str:
    return layer_id.replace(".", "__")  # nn.ModuleDict keys cannot hold dots


class UNet(nn.Module):
    """Runs the layer table in order; `layer_fns` exposes each layer for per-layer timing."""

    def __init__(self, table: LayerTable, weights: dict[str, ConvWeights] | None = None):
        super().__init__()
        self.table = table
        weights = weights if weights is not None else make_weights(table)
        self.convs = nn.ModuleDict()
        for layer in table.convs:
            conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel,
                             stride=layer.stride, padding=layer.padding)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(weights[layer.id].weight))
                conv.bias.copy_(torch.from_numpy(weights[layer.id].bias))
            self.convs[_module_key(layer.id)] = conv
        self.eval()

    def layer_fn(self, layer: Layer) -> LayerFn:
        if layer.op == CONV:
            conv = self.convs[_module_key(layer.id)]
            return (lambda x: F.relu(conv(x))) if layer.relu else conv
        if layer.op == MAXPOOL_RELU:
            return lambda x: F.relu(F.max_pool2d(x, layer.kernel, layer.stride))
        if layer.op == RESIZE_ADD_RELU:
            return lambda x, skip: F.relu(F.interpolate(x, scale_factor=2, mode="nearest") + skip)
        raise ValueError(f"unknown op {layer.op!r} in layer {layer.id!r}")

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
        for src in layer.inputs:
            if last_use[src] == i:
                del acts[src]
        acts[layer.id] = out
        yield layer, out

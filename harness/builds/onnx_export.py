"""The layer table as an ONNX model whose node names carry the layer ids (host side: PyTorch).

The network is TableNet, the fp32 reference itself, with the build's seeded weights. Each
layer runs inside a submodule named after its id (harness.model.layers.scope_key: dots
become `__`), so PyTorch's TorchScript exporter names every node it emits for that layer
`/<key>/<Op>` (e.g. `/layer1__0__conv1/Conv`, `/dec1__up/Resize`): ONNX Runtime keeps those
names (or builds fused nodes' names from them), which is how its profiler's per-node times map
back to layer ids (harness.builds.onnxruntime_ref).

Why the TorchScript exporter (`dynamo=False`): it needs only PyTorch and the onnx package (the
dynamo exporter also needs onnxscript), works offline, and traces this table-driven module as
it runs, with the module scopes that name the nodes. PyTorch 2.13 deprecates it, with a
warning that is silenced here because the choice is deliberate.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from harness.model.layers import CHANNEL_SHUFFLE, Layer, LayerTable, scope_key
from harness.model.tablenet import LayerFn, TableNet, run_layers
from harness.model.weights import ConvWeights

# ONNX opset of the export: the newest the TorchScript exporter writes (20), read by ONNX
# Runtime 1.32 (which reads up to 23); every op of the layer table is in it.
OPSET = 20
INPUT_NAME = "input"


def output_name(table: LayerTable) -> str:
    """The graph output's name, in its layer's scope as the exporter names every other tensor
    (`/head__conv/output`): ORT names some nodes after their output (NCHWc convolutions on x86
    are `<output>_nchwc`), and the last layer's node must still carry its layer."""
    return f"/{scope_key(table.output_id)}/output"


def shuffle_by_reshape(groups: int) -> LayerFn:
    """Channel shuffle as reshape/transpose/reshape, as torchvision's ShuffleNet writes it:
    the same permutation as F.channel_shuffle, which the exporter has no ONNX form for."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
    return fn


class LayerScope(nn.Module):
    """One layer as a module, so that the exporter's node names carry its name."""

    def __init__(self, fn: LayerFn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


def exportable_fn(layer: Layer, fn: LayerFn) -> LayerFn:
    return shuffle_by_reshape(layer.groups) if layer.op == CHANNEL_SHUFFLE else fn


class ScopedTableNet(nn.Module):
    """TableNet (which owns the weights) with each layer run inside a module named for its id."""

    def __init__(self, table: LayerTable, weights: dict[str, ConvWeights]):
        super().__init__()
        self.table = table
        self.net = TableNet(table, weights)
        fns = self.net.layer_fns()
        self.scopes = nn.ModuleDict({scope_key(layer.id): LayerScope(exportable_fn(layer, fns[layer.id]))
                                     for layer in table})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fns = {layer.id: self.scopes[scope_key(layer.id)] for layer in self.table}
        out = x
        for _, out in run_layers(self.table, fns, x):
            pass
        return out


def export_onnx(table: LayerTable, weights: dict[str, ConvWeights], path: Path) -> Path:
    """Write the network as ONNX (weights as initializers, one input and one output) to path."""
    net = ScopedTableNet(table, weights).eval()
    x = torch.zeros(table.config.input_shape, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's, about itself: chosen knowingly
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[output_name(table)])
    return path

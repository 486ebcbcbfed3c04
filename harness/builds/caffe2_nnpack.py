"""`caffe2-nnpack`: the baseline. PyTorch eager with every convolution run by NNPACK.

This is what Caffe2's NNPACK engine did: algorithm `auto` (NNPACK picks Winograd or FFT by
tile count), transform strategy `compute` (weights re-transformed on every call), ReLU fused
into the convolution's output transform. Pooling and resize stay in PyTorch.
"""
from __future__ import annotations

import numpy as np
import torch

from harness.builds.base import Build, BuildContext, is_study_conv
from harness.builds.eager import EagerExecutable
from harness.devices.config import Device
from harness.kernels import nnpack
from harness.model.layers import CONV, Layer
from harness.model.tablenet import LayerFn, TableNet


def nnpack_conv(layer: Layer, ctx: BuildContext, algorithm: nnpack.Algorithm,
                strategy: nnpack.Strategy, pool: nnpack.ThreadPool) -> nnpack.Conv2d:
    _, c_in, h, w = layer.in_shape
    shape = nnpack.ConvShape(c_in, layer.out_channels, h, w, layer.kernel, layer.padding)
    wts = ctx.weights[layer.id]
    return nnpack.Conv2d(shape, wts.weight, wts.bias, algorithm, strategy, relu=layer.relu, pool=pool)


def as_torch_fn(conv: nnpack.Conv2d) -> LayerFn:
    """Wrap an NNPACK conv as a torch layer function, batch by batch, with no copies."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        xs = x.contiguous().numpy()
        n, _, h, w = xs.shape
        out = np.empty((n, conv.shape.out_channels, h, w), dtype=np.float32)
        for i in range(n):
            conv.run_into(xs[i:i + 1], out[i:i + 1])
        return torch.from_numpy(out)
    return fn


class Caffe2NNPACKBuild(Build):
    name = "caffe2-nnpack"
    description = "PyTorch eager, every convolution by NNPACK (algorithm auto), as Caffe2's NNPACK engine"
    tolerance = 1e-3

    def unavailable(self, device: Device) -> str | None:
        return nnpack.available()

    def supports(self, layer: Layer) -> bool:
        """Convolutions go to NNPACK through a binding written for the study's 3x3 convolutions
        (stride 1, same-size output); every other layer is PyTorch's, any op."""
        return layer.op != CONV or is_study_conv(layer)

    def compile(self, ctx: BuildContext) -> EagerExecutable:
        torch.set_num_threads(ctx.threads)
        pool = nnpack.ThreadPool(ctx.threads)
        fns = TableNet(ctx.table, ctx.weights).layer_fns()
        impls = {layer.id: "aten" for layer in ctx.table}
        for layer in ctx.table:
            if layer.op == CONV:
                conv = nnpack_conv(layer, ctx, nnpack.Algorithm.auto, nnpack.Strategy.compute, pool)
                fns[layer.id] = as_torch_fn(conv)
                impls[layer.id] = conv.impl
        exe = EagerExecutable(ctx.table, fns, impls)
        exe.pool = pool  # type: ignore[attr-defined]  # keep the threadpool alive with the executable
        return exe

"""`caffe2-nnpack`: the baseline. PyTorch eager with every convolution NNPACK can compute run by NNPACK.

This is what Caffe2's NNPACK engine did: algorithm `auto` (NNPACK picks Winograd or FFT by
tile count for stride-1 kernels, implicit GEMM for strided ones), transform strategy `compute`
(weights re-transformed on every call), ReLU fused into the convolution's output transform.
A convolution NNPACK cannot take (depthwise and grouped ones: NNPACK has no groups) runs in
PyTorch's own kernel (aten), as Caffe2 fell back to its default engine; pooling, adds, concat
and the rest stay in PyTorch. Each layer's impl says which ran, e.g. `nnpack:auto/compute`,
`nnpack:implicit_gemm/compute (auto)` or `aten:depthwise (nnpack: no grouped conv)`.

Every NNPACK layer is checked once at build time against PyTorch on a random input: NNPACK
can report success without computing (its `direct` 1x1 on the x86 build in PyTorch, which is
what `auto` picks for 1x1 stride-1 convolutions); such a layer runs `implicit_gemm` instead,
and says so.
"""
from __future__ import annotations

import numpy as np
import torch

from harness.builds.base import Build, BuildContext, relative_error
from harness.builds.eager import EagerExecutable
from harness.builds.nnpack_layers import conv_shape, fallback_label, layer_rule, make_conv
from harness.devices.config import Device
from harness.kernels import nnpack
from harness.model.layers import Layer
from harness.model.tablenet import LayerFn, TableNet

FAST = (nnpack.Algorithm.wt8x8, nnpack.Algorithm.ft8x8, nnpack.Algorithm.ft16x16)
PROBE_TOLERANCE = 1e-3  # one layer against PyTorch's direct conv; FFT and Winograd are ~1e-6 off


def as_torch_fn(conv: nnpack.Conv2d) -> LayerFn:
    """Wrap an NNPACK conv as a torch layer function, batch by batch, with no copies."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        xs = x.contiguous().numpy()
        s = conv.shape
        out = np.empty((xs.shape[0], s.out_channels, s.out_height, s.out_width), dtype=np.float32)
        for i in range(xs.shape[0]):
            conv.run_into(xs[i:i + 1], out[i:i + 1])
        return torch.from_numpy(out)
    return fn


def auto_label(layer: Layer) -> str:
    """`nnpack:auto/compute` where auto chooses among fast algorithms by tile count (the UNet
    study's label); where its choice is fixed by the shape, that choice, e.g. implicit_gemm."""
    chosen = nnpack.auto_choice(conv_shape(layer))
    return "nnpack:auto/compute" if chosen in FAST else f"nnpack:{chosen.name}/compute (auto)"


def probe(fn: LayerFn, reference: LayerFn, layer: Layer) -> str | None:
    """None if fn computes what the reference does on a random input, else a short, stable
    reason (labels built from it must not vary from run to run)."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(layer.in_shape).astype(np.float32))
    try:
        with torch.inference_mode():
            out, ref = fn(x).numpy(), reference(x).numpy().astype(np.float64)
    except nnpack.NNPACKError as exc:
        return failure_reason(exc)
    # an output NNPACK never wrote can hold anything, NaN included
    return None if np.isfinite(out).all() and relative_error(out, ref) <= PROBE_TOLERANCE else "wrong output"


def failure_reason(exc: nnpack.NNPACKError) -> str:
    return f"status {exc.status} ({nnpack.STATUS_NAMES.get(exc.status, 'unknown')})"


def try_nnpack(layer: Layer, ctx: BuildContext, algorithm: nnpack.Algorithm, reference: LayerFn,
               pool: nnpack.ThreadPool) -> tuple[LayerFn | None, str]:
    """(the layer's NNPACK function, "") if this algorithm computes it correctly here, else (None, why not)."""
    w = ctx.weights[layer.id]
    try:
        conv = make_conv(layer, w.weight, w.bias, algorithm, nnpack.Strategy.compute, pool)
    except nnpack.NNPACKError as exc:
        return None, failure_reason(exc)
    fn = as_torch_fn(conv)  # holds conv, and with it the weights and workspace
    failure = probe(fn, reference, layer)
    return (None, failure) if failure else (fn, "")


def nnpack_layer(layer: Layer, ctx: BuildContext, reference: LayerFn, pool: nnpack.ThreadPool
                 ) -> tuple[LayerFn, str]:
    """The layer's function and impl label: NNPACK `auto`; implicit GEMM where auto's choice
    fails here; PyTorch's kernel (`reference`) where NNPACK cannot compute the layer."""
    reason = layer_rule(layer)
    if reason:
        return reference, fallback_label("aten", layer, reason)
    fn, failure = try_nnpack(layer, ctx, nnpack.Algorithm.auto, reference, pool)
    if fn:
        return fn, auto_label(layer)
    chosen = nnpack.auto_choice(conv_shape(layer))
    if chosen != nnpack.Algorithm.implicit_gemm:
        fn, second = try_nnpack(layer, ctx, nnpack.Algorithm.implicit_gemm, reference, pool)
        if fn:
            return fn, f"nnpack:implicit_gemm/compute (auto's {chosen.name}: {failure} here)"
        failure = second
    return reference, fallback_label("aten", layer, failure)


class Caffe2NNPACKBuild(Build):
    name = "caffe2-nnpack"
    description = "PyTorch eager, convolutions by NNPACK (algorithm auto) where it can, as Caffe2's NNPACK engine"
    tolerance = 1e-3

    def unavailable(self, device: Device) -> str | None:
        return nnpack.available()

    def compile(self, ctx: BuildContext) -> EagerExecutable:
        torch.set_num_threads(ctx.threads)
        pool = nnpack.ThreadPool(ctx.threads)
        fns = TableNet(ctx.table, ctx.weights).layer_fns()
        impls = {layer.id: "aten" for layer in ctx.table}
        for layer in ctx.table.convs:
            fns[layer.id], impls[layer.id] = nnpack_layer(layer, ctx, fns[layer.id], pool)
        exe = EagerExecutable(ctx.table, fns, impls)
        exe.pool = pool  # type: ignore[attr-defined]  # keep the threadpool alive with the executable
        return exe

"""MaxPool/ReLU and ResizeNearest/Add/ReLU kernels with fp16 tensors and `compute`-dtype math.

Relax's own fp16 versions of these layers do their arithmetic in half. On a CPU without fp16
math LLVM widens every half operation, and for the resize's 2x gather it emits a chain of
16-bit inserts (SSE4a `insertq` on znver3) that ran 18x slower than the fp32 kernel here.
These load fp16, widen once (the resize widens each input row into a small fp32 buffer, so
the gather is over 32-bit lanes), compute in `compute`, and store fp16.
"""
from __future__ import annotations

from harness.model.layers import MAXPOOL_RELU, RESIZE_ADD_RELU, Layer


def memory_layer_primfunc(layer: Layer, storage: str, compute: str):
    """The layer as a te PrimFunc (inputs..., out), already scheduled."""
    from harness.builds.tvm_common import parallel_schedule, schedule_primfunc  # noqa: PLC0415

    if layer.op == MAXPOOL_RELU:
        return schedule_primfunc(_maxpool_relu(layer, storage, compute), parallel_schedule)
    if layer.op == RESIZE_ADD_RELU:
        return schedule_primfunc(_resize_add_relu(layer, storage, compute), _schedule_resize)
    raise ValueError(f"layer {layer.id}: no fp16 kernel for op {layer.op!r}")


def _maxpool_relu(layer: Layer, storage: str, compute: str):
    from tvm import te, tirx  # noqa: PLC0415

    x = te.placeholder(layer.in_shape, storage, name="x")
    (kh, kw), s = layer.kernel, layer.stride  # type: ignore[misc]
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    pooled = te.compute(layer.out_shape, lambda n, c, y, w: te.max(x[n, c, y * s + rh, w * s + rw].astype(compute),
                                                                   axis=[rh, rw]), name="pool_max")
    out = te.compute(layer.out_shape, lambda *i: tirx.max(pooled(*i), tirx.const(0, compute)).astype(storage),
                     name="relu")
    return te.create_prim_func([x, out])


def _resize_add_relu(layer: Layer, storage: str, compute: str):
    """Nearest 2x (asymmetric, floor: what torch's nearest does), + skip, ReLU."""
    from tvm import te, tirx  # noqa: PLC0415

    x = te.placeholder(layer.in_shape, storage, name="x")
    skip = te.placeholder(layer.out_shape, storage, name="skip")
    fy, fx = layer.out_shape[2] // layer.in_shape[2], layer.out_shape[3] // layer.in_shape[3]
    wide = te.compute(layer.in_shape, lambda *i: x(*i).astype(compute), name="widen")
    out = te.compute(layer.out_shape, lambda n, c, y, w: tirx.max(
        wide[n, c, y // fy, w // fx] + skip[n, c, y, w].astype(compute), tirx.const(0, compute)).astype(storage),
        name="resize_add_relu")
    return te.create_prim_func([x, skip, out])


def _schedule_resize(sch) -> None:
    out = sch.get_sblock("resize_add_relu")
    n, c, y, x = sch.get_loops(out)
    rows = sch.fuse(n, c, y)
    sch.parallel(rows)
    width = int(sch.get(x).extent)
    _, lanes = sch.split(x, [None, 8 if width % 8 == 0 else width])
    sch.vectorize(lanes)
    widen = sch.get_sblock("widen")
    sch.compute_at(widen, rows)  # the one input row this output row reads, widened once
    sch.vectorize(sch.get_loops(widen)[-1])

"""Emit the layer table as a Relax module, one named function per layer.

Each layer becomes a private Relax function marked Primitive and named after its layer id
(`enc1.conv2` -> `enc1__conv2`). FuseOps leaves Primitive functions alone and FuseTIR turns
each into exactly one PrimFunc of the same name, so:
- the fusion is the UNet study's by construction: conv+bias(+ReLU), MaxPool+ReLU,
  ResizeNearest+Add+ReLU are each one kernel;
- the symbol `vm.set_instrument` reports is the layer id, with no guessing.
A layer can instead be handed to an external function (the hybrid's NNPACK convolutions),
emitted as `R.call_dps_packed` to a registered global.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.model.layers import CONV, INPUT, MAXPOOL_RELU, RESIZE_ADD_RELU, Layer, LayerTable
from harness.model.weights import ConvWeights

SEP = "__"


def func_name(layer_id: str) -> str:
    return layer_id.replace(".", SEP)


def layer_id_of(symbol: str) -> str:
    return symbol.replace(SEP, ".")


@dataclass(frozen=True)
class Emitted:
    mod: Any  # tvm.IRModule
    params: list[np.ndarray]  # weights and biases, in main's parameter order after the input


def _tensor(shape, dtype: str):
    from tvm import relax  # noqa: PLC0415

    return relax.TensorType(tuple(int(s) for s in shape), dtype)


def _layer_body(layer: Layer, args: list, dtype: str, out_hw: tuple[int, int]):
    from tvm import relax  # noqa: PLC0415

    op = relax.op
    if layer.op == CONV:
        x, w, b = args
        y = op.add(op.nn.conv2d(x, w, strides=layer.stride, padding=layer.padding,
                                data_layout="NCHW", kernel_layout="OIHW", out_dtype=dtype), b)
        return op.nn.relu(y) if layer.relu else y
    if layer.op == MAXPOOL_RELU:
        (x,) = args
        return op.nn.relu(op.nn.max_pool2d(x, pool_size=layer.kernel, strides=layer.stride))
    if layer.op == RESIZE_ADD_RELU:
        x, skip = args
        up = op.image.resize2d(x, size=out_hw, layout="NCHW", method="nearest_neighbor",
                               coordinate_transformation_mode="asymmetric", rounding_method="floor")
        return op.nn.relu(op.add(up, skip))
    raise ValueError(f"layer {layer.id}: unknown op {layer.op!r}")


def emit_relax(table: LayerTable, weights: dict[str, ConvWeights], dtype: str = "float32",
               external: dict[str, str] | None = None, kernels: dict[str, Any] | None = None) -> Emitted:
    """The UNet as Relax. `external` maps layer ids to global function names called through
    R.call_dps_packed (destination-passing: the callee writes into the output tensor).
    `kernels` maps layer ids to ready (scheduled) PrimFuncs (the layer's inputs, [weight, bias,]
    out), added under the layer's name and called with call_tir; a conv's weight argument is
    weights[id].weight as given, whatever its shape (e.g. Winograd-transformed)."""
    from tvm import relax  # noqa: PLC0415

    external = external or {}
    bb = relax.BlockBuilder()
    in_dtype = "float32"  # the network's interface stays fp32; fp16 builds cast inside

    kernels = kernels or {}
    gvars = {layer.id: _emit_layer_function(bb, layer, [_src_shape(table, s) for s in layer.inputs], dtype)
             for layer in table if layer.id not in external and layer.id not in kernels}
    for lid, prim in kernels.items():  # already scheduled: FuseOps must not merge it (opaque)
        gvars[lid] = bb.add_func(prim.with_attrs({"global_symbol": func_name(lid), "op_pattern": 8}), func_name(lid))

    x = relax.Var("x", _tensor(table.config.input_shape, in_dtype))
    main_params = [x]
    wvars: dict[str, tuple] = {}
    for layer in table.convs:
        if layer.id in external:
            continue  # the external kernel owns its (possibly pre-transformed) weights
        w = relax.Var(f"{func_name(layer.id)}_w", _tensor(weights[layer.id].weight.shape, dtype))
        b = relax.Var(f"{func_name(layer.id)}_b", _tensor((1, layer.out_channels, 1, 1), dtype))
        wvars[layer.id] = (w, b)
        main_params += [w, b]

    with bb.function("main", main_params):
        with bb.dataflow():
            acts = {INPUT: bb.emit(relax.op.astype(x, dtype)) if dtype != in_dtype else x}
            for layer in table:
                ins = [acts[s] for s in layer.inputs]
                if layer.id in external:
                    acts[layer.id] = bb.emit(relax.call_dps_packed(
                        external[layer.id], ins, out_ty=_tensor(layer.out_shape, dtype)))
                else:
                    ins += list(wvars.get(layer.id, ()))
                    acts[layer.id] = bb.emit(
                        relax.call_tir(gvars[layer.id], ins, out_ty=_tensor(layer.out_shape, dtype))
                        if layer.id in kernels else relax.Call(gvars[layer.id], ins))
            result = acts[table.output_id]
            if dtype != in_dtype:
                result = bb.emit(relax.op.astype(result, in_dtype))
            out = bb.emit_output(result)
        bb.emit_func_output(out)
    return Emitted(bb.get(), relax_params(table, weights, dtype, external))


def relax_params(table: LayerTable, weights: dict[str, ConvWeights], dtype: str = "float32",
                 external: dict[str, str] | None = None) -> list[np.ndarray]:
    """main's weight arguments, in order. Needs no TVM: a device rebuilds them from the seed."""
    np_dtype = np.float16 if dtype == "float16" else np.float32
    arrays: list[np.ndarray] = []
    for layer in table.convs:
        if layer.id not in (external or {}):
            arrays += [weights[layer.id].weight.astype(np_dtype),
                       weights[layer.id].bias.reshape(1, -1, 1, 1).astype(np_dtype)]
    return arrays


def _layer_param_types(layer: Layer, input_shapes: list, dtype: str) -> list:
    types = [_tensor(shape, dtype) for shape in input_shapes]
    if layer.op == CONV:
        types += [_tensor((layer.out_channels, layer.in_channels, *layer.kernel), dtype),
                  _tensor((1, layer.out_channels, 1, 1), dtype)]
    return types


def _emit_layer_function(bb, layer: Layer, input_shapes: list, dtype: str):
    """A private Primitive function computing one layer, named after its id."""
    from tvm import relax  # noqa: PLC0415

    params = [relax.Var(f"p{i}", t) for i, t in enumerate(_layer_param_types(layer, input_shapes, dtype))]
    with bb.function(func_name(layer.id), params, attrs={"Primitive": True}, private=True):
        with bb.dataflow():
            out = bb.emit_output(_layer_body(layer, params, dtype, layer.out_shape[2:]))
        bb.emit_func_output(out)
    return bb.get().get_global_var(func_name(layer.id))


def emit_layer(layer: Layer, dtype: str = "float32"):
    """A module whose main runs just this layer: what tuning measures in isolation."""
    from tvm import relax  # noqa: PLC0415

    bb = relax.BlockBuilder()
    shapes = [layer.in_shape] + ([layer.out_shape] if layer.op == RESIZE_ADD_RELU else [])
    gv = _emit_layer_function(bb, layer, shapes, dtype)
    params = [relax.Var(f"a{i}", t) for i, t in enumerate(_layer_param_types(layer, shapes, dtype))]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.Call(gv, params)))
        bb.emit_func_output(out)
    return bb.get()


def _src_shape(table: LayerTable, src: str):
    return table.config.input_shape if src == INPUT else table[src].out_shape

"""Emit the layer table as a Relax module, one named function per kernel.

Each layer becomes a private Relax function marked Primitive and named after its layer id
(`enc1.conv2` -> `enc1__conv2`). FuseOps leaves Primitive functions alone and FuseTIR turns
each into exactly one PrimFunc of the same name, so:
- the fusion is the UNet study's by construction: conv+bias(+ReLU), MaxPool+ReLU,
  ResizeNearest+Add+ReLU are each one kernel, and so is every other layer of the table
  (conv+bias+ReLU6, a linear layer with its flatten, a channel shuffle's reshapes);
- the symbol `vm.set_instrument` reports is the layer id, with no guessing.
The `tvm` builds go one step further (harness/builds/tvm_fusion.py): a conv's function can
also compute the pool after it (returning the pool's map, or the tuple (conv's, pool's) when
other layers read the conv's too) or the ResizeNearest+Add+ReLU before it (taking that
layer's inputs). That function is still named after the conv, and the absorbed layers have
none: FuseTIR makes one PrimFunc of the whole group.
A layer can instead be handed to an external function (the hybrid's NNPACK convolutions),
emitted as `R.call_dps_packed` to a registered global.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.model.layers import (ADD, AVGPOOL, CHANNEL_SHUFFLE, CHANNEL_SLICE, CONCAT, CONV, GLOBAL_AVGPOOL, INPUT,
                                  LINEAR, MAXPOOL, MAXPOOL_RELU, RELU, RELU6, RESIZE_ADD_RELU, RESIZE_NEAREST, Layer,
                                  LayerTable)
from harness.model.weights import ConvWeights

if TYPE_CHECKING:
    from harness.builds.tvm_fusion import FusedGroup

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


def _activation(y, activation: str):
    from tvm import relax  # noqa: PLC0415

    if activation == RELU:
        return relax.op.nn.relu(y)
    if activation == RELU6:
        return relax.op.clip(y, 0, 6)  # as the PyTorch frontend emits relu6
    return y


def _layer_body(layer: Layer, args: list, dtype: str, out_hw: tuple[int, ...]):
    """The layer's computation in Relax ops (legalized to topi computes by the zero pipeline)."""
    from tvm import relax  # noqa: PLC0415

    op = relax.op
    if layer.op == CONV:
        x, w, b = args
        y = op.add(op.nn.conv2d(x, w, strides=layer.stride, padding=layer.padding, groups=layer.groups,
                                data_layout="NCHW", kernel_layout="OIHW", out_dtype=dtype), b)
        return _activation(y, layer.activation)
    if layer.op == LINEAR:
        x, w, b = args
        if layer.flatten:
            x = op.reshape(x, (layer.in_shape[0], layer.in_features))
        return _activation(op.add(op.matmul(x, op.permute_dims(w), out_dtype=dtype), b), layer.activation)
    if layer.op == MAXPOOL_RELU:
        (x,) = args
        return op.nn.relu(op.nn.max_pool2d(x, pool_size=layer.kernel, strides=layer.stride))
    if layer.op == RESIZE_ADD_RELU:
        x, skip = args
        return op.nn.relu(op.add(_resize(x, out_hw), skip))
    return _unweighted_body(layer, args, out_hw)


def _resize(x, out_hw: tuple[int, ...]):
    """Nearest neighbour as PyTorch's: asymmetric coordinates, floor."""
    from tvm import relax  # noqa: PLC0415

    return relax.op.image.resize2d(x, size=tuple(out_hw), layout="NCHW", method="nearest_neighbor",
                                   coordinate_transformation_mode="asymmetric", rounding_method="floor")


def _unweighted_body(layer: Layer, args: list, out_hw: tuple[int, ...]):
    from tvm import relax  # noqa: PLC0415

    op = relax.op
    if layer.op in (MAXPOOL, AVGPOOL):
        pool = op.nn.max_pool2d if layer.op == MAXPOOL else op.nn.avg_pool2d
        extra = {} if layer.op == MAXPOOL else {"count_include_pad": True}  # PyTorch's default
        return pool(args[0], pool_size=layer.kernel, strides=layer.stride, padding=layer.padding,
                    ceil_mode=layer.ceil_mode, **extra)
    if layer.op == GLOBAL_AVGPOOL:
        return op.mean(args[0], axis=[2, 3], keepdims=not layer.flatten)
    if layer.op == ADD:
        return _activation(op.add(*args), layer.activation)
    if layer.op == CONCAT:
        return op.concat(list(args), axis=1)
    if layer.op == CHANNEL_SHUFFLE:
        n, c, h, w = layer.in_shape
        g = layer.groups
        grouped = op.reshape(args[0], (n, g, c // g, h, w))
        return op.reshape(op.permute_dims(grouped, [0, 2, 1, 3, 4]), (n, c, h, w))
    if layer.op == CHANNEL_SLICE:
        start, stop = layer.channels  # type: ignore[misc]
        return op.strided_slice(args[0], axes=[1], begin=[start], end=[stop])
    if layer.op == RESIZE_NEAREST:
        return _resize(args[0], out_hw)
    raise ValueError(f"layer {layer.id}: unknown op {layer.op!r}")


def emit_relax(table: LayerTable, weights: dict[str, ConvWeights], dtype: str = "float32",
               external: dict[str, str] | None = None, kernels: dict[str, Any] | None = None,
               fused: dict[str, FusedGroup] | None = None) -> Emitted:
    """The layer table as Relax. `external` maps layer ids to global function names called through
    R.call_dps_packed (destination-passing: the callee writes into the output tensor).
    `kernels` maps layer ids to ready (scheduled) PrimFuncs (the layer's inputs, [weight, bias,]
    out), added under the layer's name and called with call_tir; a conv's weight argument is
    weights[id].weight as given, whatever its shape (e.g. Winograd-transformed).
    `fused` maps conv ids to the layers fused into their function (tvm_fusion.FusedGroup)."""
    from tvm import relax  # noqa: PLC0415

    external = external or {}
    bb = relax.BlockBuilder()
    in_dtype = "float32"  # the network's interface stays fp32; fp16 builds cast inside

    kernels = kernels or {}
    fused = fused or {}
    absorbed = {lid for group in fused.values() for lid in group.absorbed}
    gvars = {layer.id: _emit_group_function(bb, table, fused[layer.id], dtype) if layer.id in fused
             else _emit_layer_function(bb, layer, [_src_shape(table, s) for s in layer.inputs], dtype)
             for layer in table if layer.id not in external and layer.id not in kernels and layer.id not in absorbed}
    for lid, prim in kernels.items():  # already scheduled: FuseOps must not merge it (opaque)
        gvars[lid] = bb.add_func(prim.with_attrs({"global_symbol": func_name(lid), "op_pattern": 8}), func_name(lid))

    x = relax.Var("x", _tensor(table.config.input_shape, in_dtype))
    main_params = [x]
    wvars: dict[str, tuple] = {}
    for layer in table.weighted:
        if layer.id in external:
            continue  # the external kernel owns its (possibly pre-transformed) weights
        w = relax.Var(f"{func_name(layer.id)}_w", _tensor(weights[layer.id].weight.shape, dtype))
        b = relax.Var(f"{func_name(layer.id)}_b", _tensor(bias_shape(layer), dtype))
        wvars[layer.id] = (w, b)
        main_params += [w, b]

    with bb.function("main", main_params):
        with bb.dataflow():
            acts = {INPUT: bb.emit(relax.op.astype(x, dtype)) if dtype != in_dtype else x}
            for layer in table:
                if layer.id in absorbed:
                    continue  # computed by its conv's function
                if layer.id in fused:
                    _emit_group_call(bb, table, fused[layer.id], gvars[layer.id], acts, wvars[layer.id])
                    continue
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
    for layer in table.weighted:
        if layer.id not in (external or {}):
            arrays += [weights[layer.id].weight.astype(np_dtype),
                       weights[layer.id].bias.reshape(bias_shape(layer)).astype(np_dtype)]
    return arrays


def bias_shape(layer: Layer) -> tuple[int, ...]:
    """Broadcast against the output: (1, C, 1, 1) for a conv, (1, features) for a linear layer."""
    return (1, layer.out_channels, 1, 1) if layer.op == CONV else (1, layer.out_channels)


def _layer_param_types(layer: Layer, input_shapes: list, dtype: str) -> list:
    types = [_tensor(shape, dtype) for shape in input_shapes]
    if layer.weight_shape is not None:
        types += [_tensor(layer.weight_shape, dtype), _tensor(bias_shape(layer), dtype)]
    return types


def _emit_layer_function(bb, layer: Layer, input_shapes: list, dtype: str):
    """A private Primitive function computing one layer, named after its id."""
    from tvm import relax  # noqa: PLC0415

    params = [relax.Var(f"p{i}", t) for i, t in enumerate(_layer_param_types(layer, input_shapes, dtype))]
    # The layer id as an attribute keeps identical layers (two same-shape blocks of a ResNet)
    # apart: the BlockBuilder merges structurally equal functions into one.
    with bb.function(func_name(layer.id), params, attrs={"Primitive": True, "harness.layer": layer.id}, private=True):
        with bb.dataflow():
            out = bb.emit_output(_layer_body(layer, params, dtype, tuple(layer.out_shape[2:])))
        bb.emit_func_output(out)
    return bb.get().get_global_var(func_name(layer.id))


def _group_inputs(table: LayerTable, group: FusedGroup) -> tuple[str, ...]:
    """What the group's function reads (before its weights): the inputs of its first layer."""
    return table[group.before].inputs if group.before else table[group.conv].inputs


def _emit_group_function(bb, table: LayerTable, group: FusedGroup, dtype: str):
    """A private Primitive function computing a conv with the layers fused into it, named after
    the conv: [resize+add+relu ->] conv+bias[+act] [-> pool], returning the pool's map, or
    (conv's, pool's) when the conv's own output is read elsewhere too."""
    from tvm import relax  # noqa: PLC0415

    conv = table[group.conv]
    shapes = [_src_shape(table, s) for s in _group_inputs(table, group)]
    types = [_tensor(shape, dtype) for shape in shapes] + [_tensor(conv.weight_shape, dtype),
                                                           _tensor(bias_shape(conv), dtype)]
    params = [relax.Var(f"p{i}", t) for i, t in enumerate(types)]
    *ins, w, b = params
    attrs = {"Primitive": True, "harness.layer": conv.id, "harness.fused": ",".join(group.absorbed)}
    with bb.function(func_name(conv.id), params, attrs=attrs, private=True):
        with bb.dataflow():
            if group.before:
                ins = [bb.emit(_layer_body(table[group.before], ins, dtype, tuple(conv.in_shape[2:])))]
            out = bb.emit(_layer_body(conv, [*ins, w, b], dtype, tuple(conv.out_shape[2:])))
            if group.after:
                after = table[group.after]
                pooled = bb.emit(_layer_body(after, [out], dtype, tuple(after.out_shape[2:])))
                out = bb.emit(relax.Tuple([out, pooled])) if group.keep_conv else pooled
            result = bb.emit_output(out)
        bb.emit_func_output(result)
    return bb.get().get_global_var(func_name(conv.id))


def _emit_group_call(bb, table: LayerTable, group: FusedGroup, gvar, acts: dict, weights: tuple) -> None:
    """Call the group's function in main and bind the outputs it gives to their layers."""
    from tvm import relax  # noqa: PLC0415

    out = bb.emit(relax.Call(gvar, [acts[s] for s in _group_inputs(table, group)] + list(weights)))
    if group.after and group.keep_conv:
        acts[group.conv] = bb.emit(relax.TupleGetItem(out, 0))
        acts[group.after] = bb.emit(relax.TupleGetItem(out, 1))
    else:
        acts[group.after or group.conv] = out


def emit_layer(layer: Layer, dtype: str = "float32"):
    """A module whose main runs just this layer: what tuning measures in isolation."""
    from tvm import relax  # noqa: PLC0415

    bb = relax.BlockBuilder()
    shapes = list(layer.in_shapes)
    gv = _emit_layer_function(bb, layer, shapes, dtype)
    params = [relax.Var(f"a{i}", t) for i, t in enumerate(_layer_param_types(layer, shapes, dtype))]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.Call(gv, params)))
        bb.emit_func_output(out)
    return bb.get()


def _src_shape(table: LayerTable, src: str):
    return table.config.input_shape if src == INPUT else table[src].out_shape

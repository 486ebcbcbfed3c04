"""`qnnpack-int8`: the network quantized to int8 after training (static), run by PyTorch's QNNPACK.

Post-training static quantization as PyTorch's eager mode does it, layer by layer so that each
layer is timed under its own id:
- calibration: the fp32 reference runs on a few seeded inputs (not the measured one) and an
  observer per layer records the range of its output, and one the range of the network input;
- weights: int8, symmetric, per output channel (QNNPACK requantizes per channel); bias fp32
  (quantized to int32 with the input and weight scales inside the op). Per channel rather than
  the per-tensor default of PyTorch's qnnpack qconfig: measured max errors (see `tolerance`)
  per tensor / per channel were unet 0.116 / 0.098, mobilenet-v2 0.065 / 0.059, shufflenet-v2
  0.031 / 0.021, and lower or equal on every other preset but shufflenet-v2-small (0.037 both);
- activations: uint8, affine, per tensor, from the observed [min, max] (MinMax). PyTorch's
  default HistogramObserver, which clips outliers, gave max errors within +-0.02 of these on
  the small presets (neither better on all) and took 2-10x longer to calibrate;
- each layer then runs as one quantized op on uint8 NHWC tensors, requantizing its output to
  its observed range. ReLU and ReLU6 are QNNPACK's output clamp: with the output range observed
  after the activation, ReLU6's upper bound is the top of that range, as QNNPACK deployments
  (and TFLite) fuse it.

The fp32 input is quantized inside the first layer that reads it and the output dequantized
inside the last, so those two layers' times include the conversions (the result's notes say so).
Layers can be kept in fp32 (option `fp32_layers`, or an op with no int8 kernel): they
dequantize their inputs, run PyTorch's fp32 op and quantize their output to its observed range,
and their impl says `fp32:aten (not quantized: ...)`.

GFLOP/s of this build are GOP/s (int8 operations, 2 x multiply-adds of the direct method, the
same count as the fp32 FLOPs), a share of the device's int8 peak (harness/devices/peaks.py).
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch
import torch.nn.functional as F
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from harness.builds.base import Build, BuildContext
from harness.builds.eager import EagerExecutable
from harness.devices.config import Device
from harness.model.layers import (ADD, AVGPOOL, CHANNEL_SHUFFLE, CHANNEL_SLICE, CONCAT, CONV, GLOBAL_AVGPOOL, INPUT,
                                  LINEAR, MAXPOOL, MAXPOOL_RELU, NONE, RELU6, RESIZE_ADD_RELU, RESIZE_NEAREST, Layer,
                                  LayerTable)
from harness.model.tablenet import LayerFn, TableNet, run_layers
from harness.model.weights import ConvWeights

ENGINE = "qnnpack"
# Calibration inputs: seeds after the measured input's (config seed + 1, harness.model.weights),
# so the measured input is never one the ranges were taken from.
CALIBRATION_INPUTS = 4
CALIBRATION_SEED_OFFSET = 2
FP32_LAYERS_OPTION = "fp32_layers"


@dataclass(frozen=True)
class QParams:
    """An activation's uint8 quantization: real = scale x (q - zero_point)."""
    scale: float
    zero_point: int

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.quantize_per_tensor(x, self.scale, self.zero_point, torch.quint8)
        # QNNPACK works in NHWC: converting once here spares every later op a layout copy.
        return q.contiguous(memory_format=torch.channels_last) if q.dim() == 4 else q


@dataclass(frozen=True)
class QLayer:
    """One layer's int8 function and what runs it."""
    fn: LayerFn
    impl: str


def calibration_inputs(table: LayerTable, count: int = CALIBRATION_INPUTS) -> list[torch.Tensor]:
    """Inputs drawn like harness.model.weights.make_input, from other seeds."""
    seeds = range(table.config.seed + CALIBRATION_SEED_OFFSET, table.config.seed + CALIBRATION_SEED_OFFSET + count)
    return [torch.from_numpy(np.random.default_rng(s).uniform(0.0, 1.0, table.config.input_shape).astype(np.float32))
            for s in seeds]


def _observer() -> MinMaxObserver:
    return MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=False)


def observe_ranges(table: LayerTable, fns: dict[str, LayerFn], inputs: list[torch.Tensor]) -> dict[str, QParams]:
    """Each layer's output qparams (and INPUT's) from the fp32 network run on `inputs`."""
    observers = {layer_id: _observer() for layer_id in [INPUT, *table.ids]}
    with torch.inference_mode():
        for x in inputs:
            observers[INPUT](x)
            for layer, out in run_layers(table, fns, x):
                observers[layer.id](out)
    return {layer_id: _qparams(obs) for layer_id, obs in observers.items()}


def _qparams(observer: MinMaxObserver) -> QParams:
    scale, zero_point = observer.calculate_qparams()
    return QParams(float(scale), int(zero_point))


def quantize_weight(weight: np.ndarray) -> torch.Tensor:
    """int8, symmetric, one scale per output channel (axis 0 of OIHW and of (out, in))."""
    w = torch.from_numpy(weight)
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    obs(w)
    scales, zero_points = obs.calculate_qparams()
    return torch.quantize_per_channel(w, scales.double(), zero_points.long(), 0, torch.qint8)


def _activation_suffix(activation: str) -> str:
    """The impl's activation: ReLU6 is the clamp to an output range that ends at or below 6."""
    if activation == NONE:
        return ""
    return "+relu6 (output range)" if activation == RELU6 else f"+{activation}"


def _conv(layer: Layer, wts: ConvWeights, out: QParams) -> QLayer:
    packed = torch.ops.quantized.conv2d_prepack(quantize_weight(wts.weight), torch.from_numpy(wts.bias),
                                                [layer.stride] * 2, [layer.padding] * 2, [1, 1], layer.groups)
    op = torch.ops.quantized.conv2d if layer.activation == NONE else torch.ops.quantized.conv2d_relu
    kind = "depthwise-conv2d" if layer.depthwise else "conv2d"
    return QLayer(lambda x: op(x, packed, out.scale, out.zero_point),
                  f"qnnpack:{kind}{_activation_suffix(layer.activation)}")


def _linear(layer: Layer, wts: ConvWeights, out: QParams) -> QLayer:
    packed = torch.ops.quantized.linear_prepack(quantize_weight(wts.weight), torch.from_numpy(wts.bias))
    op = torch.ops.quantized.linear if layer.activation == NONE else torch.ops.quantized.linear_relu
    flatten = layer.flatten
    return QLayer(lambda x: op(torch.flatten(x, 1) if flatten else x, packed, out.scale, out.zero_point),
                  f"qnnpack:linear{_activation_suffix(layer.activation)}")


def _add(layer: Layer, out: QParams) -> QLayer:
    op = torch.ops.quantized.add if layer.activation == NONE else torch.ops.quantized.add_relu
    return QLayer(lambda a, b: op(a, b, out.scale, out.zero_point), f"qnnpack:add{_activation_suffix(layer.activation)}")


def _maxpool(layer: Layer, fp32_fn: LayerFn) -> QLayer:
    # PyTorch sends quantized max pooling to QNNPACK except with ceil_mode (its own NHWC kernel).
    where = "aten-int8:max_pool2d (QNNPACK has no ceil_mode)" if layer.ceil_mode else "qnnpack:max_pool2d"
    return QLayer(fp32_fn, where)


def _resize_add_relu(out: QParams) -> QLayer:
    def fn(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        return torch.ops.quantized.add_relu(up, skip, out.scale, out.zero_point)
    return QLayer(fn, "aten-int8:upsample_nearest2d + qnnpack:add+relu")


def _global_avgpool(layer: Layer, fp32_fn: LayerFn) -> QLayer:
    # PyTorch uses QNNPACK's average pooling unless the map is already 1x1 (then its own kernel).
    on_qnnpack = layer.in_shape[2:] != (1, 1)
    return QLayer(fp32_fn, "qnnpack:global_avg_pool2d" if on_qnnpack else "aten-int8:adaptive_avg_pool2d")


# Layers without weights whose int8 form is the reference's own function: PyTorch dispatches
# it on the tensor's dtype to its int8 kernels, the output keeping its input's qparams.
# op -> impl.
PASS_THROUGH_IMPLS: dict[str, str] = {
    MAXPOOL_RELU: "qnnpack:max_pool2d+relu",
    AVGPOOL: "qnnpack:avg_pool2d",
    CHANNEL_SHUFFLE: "qnnpack:channel_shuffle",
    CHANNEL_SLICE: "aten-int8:slice (a view, no kernel)",
    RESIZE_NEAREST: "aten-int8:upsample_nearest2d (QNNPACK has no resize)",
}


def _concat(out: QParams) -> QLayer:
    return QLayer(lambda *xs: torch.ops.quantized.cat(list(xs), 1, out.scale, out.zero_point),
                  "aten-int8:cat (QNNPACK has no concat)")


def quantized_layer(layer: Layer, fp32_fn: LayerFn, weights: dict[str, ConvWeights], out: QParams) -> QLayer | None:
    """The layer's int8 form (fp32_fn: the reference's function of it), or None for an op with
    no int8 kernel here."""
    if layer.op == CONV:
        return _conv(layer, weights[layer.id], out)
    if layer.op == LINEAR:
        return _linear(layer, weights[layer.id], out)
    if layer.op == ADD:
        return _add(layer, out)
    if layer.op == CONCAT:
        return _concat(out)
    if layer.op == MAXPOOL:
        return _maxpool(layer, fp32_fn)
    if layer.op == GLOBAL_AVGPOOL:
        return _global_avgpool(layer, fp32_fn)
    if layer.op == RESIZE_ADD_RELU:
        return _resize_add_relu(out)
    if layer.op in PASS_THROUGH_IMPLS:
        return QLayer(fp32_fn, PASS_THROUGH_IMPLS[layer.op])
    return None


def fp32_layer(fp32_fn: LayerFn, out: QParams | None, reason: str) -> QLayer:
    """A layer kept in fp32 between int8 neighbours: dequantize its int8 inputs (the network
    input is fp32 already), compute, quantize the output (not the network's: out None)."""
    def fn(*xs: torch.Tensor) -> torch.Tensor:
        y = fp32_fn(*(x.dequantize() if x.is_quantized else x for x in xs))
        return y if out is None else out.quantize(y)
    return QLayer(fn, f"fp32:aten (not quantized: {reason})")


def quantizing_input(fn: LayerFn, layer: Layer, input_q: QParams) -> LayerFn:
    """`fn` with the fp32 network input quantized where the layer reads it."""
    reads_input = tuple(src == INPUT for src in layer.inputs)

    def quantized_first(*xs: torch.Tensor) -> torch.Tensor:
        return fn(*(input_q.quantize(x) if r else x for x, r in zip(xs, reads_input)))
    return quantized_first


def dequantizing_output(fn: LayerFn) -> LayerFn:
    """`fn` with its output back in fp32 (NCHW-contiguous, as the reference's)."""
    def dequantized(*xs: torch.Tensor) -> torch.Tensor:
        out = fn(*xs)
        return (out.dequantize() if out.is_quantized else out).contiguous()
    return dequantized


def with_boundaries(layer: Layer, qlayer: QLayer, input_q: QParams, is_output: bool) -> QLayer:
    """Quantize the fp32 network input where this layer reads it; dequantize the network output."""
    fn = quantizing_input(qlayer.fn, layer, input_q) if INPUT in layer.inputs else qlayer.fn
    return QLayer(dequantizing_output(fn) if is_output else fn, qlayer.impl)


def quantize_table(table: LayerTable, weights: dict[str, ConvWeights], fp32_layers: set[str],
                   calibration: list[torch.Tensor]) -> dict[str, QLayer]:
    """Every layer's int8 (or fp32-kept) function, calibrated on `calibration`."""
    fp32_fns = TableNet(table, weights).layer_fns()
    ranges = observe_ranges(table, fp32_fns, calibration)
    layers = {}
    for layer in table:
        out, is_output = ranges[layer.id], layer.id == table.output_id
        q = None if layer.id in fp32_layers else quantized_layer(layer, fp32_fns[layer.id], weights, out)
        if q is None:
            reason = f"{FP32_LAYERS_OPTION} option" if layer.id in fp32_layers else f"no int8 kernel for {layer.op}"
            layers[layer.id] = fp32_layer(fp32_fns[layer.id], None if is_output else out, reason)
        else:
            layers[layer.id] = with_boundaries(layer, q, ranges[INPUT], is_output)
    return layers


def engine_unavailable() -> str | None:
    engines = torch.backends.quantized.supported_engines
    return None if ENGINE in engines else f"this PyTorch has no {ENGINE} engine (it has {', '.join(engines)})"


BOUNDARY_NOTE = ("the first layer's time includes quantizing the fp32 input and the last layer's "
                 "dequantizing the output")


class QNNPACKInt8Build(Build):
    name = "qnnpack-int8"
    description = "post-training static int8 quantization, every layer by PyTorch's QNNPACK engine"
    precision = "int8"
    # max|y - ref| / max|ref|, measured on this host (QNNPACK on x86, 4 calibration inputs):
    #   unet 0.098, unet-tiny 0.037, resnet18 0.019 (-small 0.022), mobilenet-v2 0.059
    #   (-small 0.18), squeezenet1.1 0.029 (-small 0.021), shufflenet-v2 0.021 (-small 0.037).
    # QNNPACK's NEON kernels (an emulated Cortex-A76, torch 2.9.1 under qemu) gave unet 0.104,
    # unet-tiny 0.037, mobilenet-v2-small 0.182, shufflenet-v2-small 0.045, resnet18-small
    # 0.022, squeezenet1.1-small 0.021.
    # One uint8 step is 1/255 = 0.4% of a layer's output range. Every conv, linear, add and cat
    # rounds its output to half a step, and the seeded He-initialised layers (no trained
    # BatchNorm statistics) pass those errors on with gains above 1; ReLU6 saturates on most
    # of MobileNet's layers, so a value rounded across the clamp moves by the clamp's margin.
    # The worst preset, mobilenet-v2-small (52 requantizing convolutions), ends 47 output
    # steps off. 0.25 (64 steps of the output's range) holds every preset on both with margin
    # and still fails a broken layer: one middle convolution with its weights scrambled gave
    # 0.74 (unet-tiny), 0.37 (resnet18-small), 0.46 (mobilenet-v2-small). A dropped bias
    # (+-0.1 here) moved them by at most 0.05: no tolerance this loose can catch that.
    tolerance = 0.25

    def unavailable(self, device: Device) -> str | None:
        return engine_unavailable()

    def peak_dtype(self, device: Device) -> str:
        return "int8"

    def compile(self, ctx: BuildContext) -> EagerExecutable:
        torch.set_num_threads(ctx.threads)  # also sizes the pthreadpool QNNPACK runs on
        torch.backends.quantized.engine = ENGINE  # read at every call, so left set for the run
        fp32_layers = set(ctx.options.get(FP32_LAYERS_OPTION, ()))
        unknown = fp32_layers - set(ctx.table.ids)
        if unknown:
            raise ValueError(f"{FP32_LAYERS_OPTION}: no layer {sorted(unknown)[0]!r} in {ctx.table.config.name}")
        layers = quantize_table(ctx.table, ctx.weights, fp32_layers, calibration_inputs(ctx.table))
        exe = EagerExecutable(ctx.table, {i: q.fn for i, q in layers.items()}, {i: q.impl for i, q in layers.items()})
        exe.notes = [BOUNDARY_NOTE]  # type: ignore[attr-defined]  # the runner records an executable's notes
        return exe


"""A feed-forward CNN as a table of layers: the one description every build, result and report shares.

A row is a *layer* as a deployment runs it: one convolution with its bias and activation (any
BatchNorm folded into the weights and bias, as deployments do), one pooling, one residual add,
or one of the UNet study's fused blocks (MaxPool/ReLU, ResizeNearest/Add/ReLU). Rows are in
execution order, and each names the rows it reads, so the table is also the network's graph:
the PyTorch module, the NNPACK build and the TVM builds are all generated from it, which is
what keeps their layer ids identical.

FLOPs follow the convention of the field (and of torch.utils.flop_counter): a convolution or a
fully connected layer costs 2 x multiply-adds of the *direct* algorithm, bias and activation
not counted. Winograd and FFT builds do fewer real operations and are credited with these same
"effective" FLOPs, so GFLOP/s is comparable across builds and can exceed the arithmetic peak.
Pooling and adds count their element operations; layers that only move data (concat, channel
shuffle or slice, nearest resize) count none.

The architectures themselves are laid out in harness/model/nets/, one module each.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

Shape = tuple[int, ...]  # NCHW for feature maps, (N, features) after a flatten

# Op kinds. The first three are the UNet study's; their names and FLOPs are part of its history.
CONV = "conv2d"
MAXPOOL_RELU = "maxpool_relu"
RESIZE_ADD_RELU = "resize_add_relu"
MAXPOOL = "maxpool"
AVGPOOL = "avgpool"
GLOBAL_AVGPOOL = "global_avgpool"
ADD = "add"
CONCAT = "concat"
CHANNEL_SHUFFLE = "channel_shuffle"
CHANNEL_SLICE = "channel_slice"
RESIZE_NEAREST = "resize_nearest"
LINEAR = "linear"
OP_KINDS = (CONV, MAXPOOL_RELU, RESIZE_ADD_RELU, MAXPOOL, AVGPOOL, GLOBAL_AVGPOOL, ADD, CONCAT,
            CHANNEL_SHUFFLE, CHANNEL_SLICE, RESIZE_NEAREST, LINEAR)
WEIGHTED_OPS = (CONV, LINEAR)
# Layers that only move data: no arithmetic to credit them with.
COPY_OPS = (CONCAT, CHANNEL_SHUFFLE, CHANNEL_SLICE, RESIZE_NEAREST)

# Fused activations (conv, linear, add).
NONE = "none"
RELU = "relu"
RELU6 = "relu6"
ACTIVATIONS = (NONE, RELU, RELU6)

INPUT = "input"


def scope_key(layer_id: str) -> str:
    """The layer id as one name without dots: PyTorch's module and parameter names cannot hold
    them, and the ONNX export names each layer's nodes after its module (harness.builds.onnx_export)."""
    return layer_id.replace(".", "__")


@dataclass(frozen=True)
class Layer:
    """One row of the layer table. Fields an op does not use keep their defaults."""

    id: str
    op: str  # one of OP_KINDS
    members: tuple[str, ...]  # the primitive ops fused into this layer, in order
    inputs: tuple[str, ...]  # ids of the layers read (INPUT for the network input)
    in_shapes: tuple[Shape, ...]  # one per input
    out_shape: Shape
    kernel: tuple[int, int] | None = None  # (kh, kw) of a conv or a pooling window
    stride: int = 1
    padding: int = 0  # on every side
    activation: str = NONE  # fused after a conv, a linear or an add
    groups: int = 1  # conv: channel groups (= in channels for depthwise); channel_shuffle: groups
    ceil_mode: bool = False  # pooling: round the output size up, as PyTorch's ceil_mode
    flatten: bool = False  # linear: flattens its NCHW input; global_avgpool: outputs (N, C)
    channels: tuple[int, int] | None = None  # channel_slice: [start, stop)
    dtype_bytes: int = 4

    def __post_init__(self) -> None:
        if self.op not in OP_KINDS:
            raise ValueError(f"layer {self.id!r}: unknown op {self.op!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"layer {self.id!r}: unknown activation {self.activation!r}")
        if len(self.in_shapes) != len(self.inputs):
            raise ValueError(f"layer {self.id!r}: {len(self.inputs)} inputs but {len(self.in_shapes)} shapes")

    @property
    def in_shape(self) -> Shape:
        """The shape of inputs[0]."""
        return self.in_shapes[0]

    @property
    def relu(self) -> bool:
        """Is a plain ReLU fused after the bias (the only activation the UNet study has)?"""
        return self.activation == RELU

    @property
    def in_channels(self) -> int:
        return self.in_shape[1]

    @property
    def out_channels(self) -> int:
        return self.out_shape[1]

    @property
    def in_features(self) -> int:
        """What a linear layer reads per sample (its input flattened)."""
        return _count(self.in_shape) // self.in_shape[0]

    @property
    def depthwise(self) -> bool:
        return self.op == CONV and self.groups > 1 and self.groups == self.in_channels

    @property
    def weight_shape(self) -> tuple[int, ...] | None:
        """OIHW for a conv, (out, in) for a linear layer; None for layers without weights."""
        if self.op == CONV:
            kh, kw = self.kernel  # type: ignore[misc]
            return (self.out_channels, self.in_channels // self.groups, kh, kw)
        if self.op == LINEAR:
            return (self.out_channels, self.in_features)
        return None

    @property
    def flops(self) -> int:
        """Effective FLOPs: 2 x MACs of the direct method for conv and linear; element ops for the rest."""
        outputs = _count(self.out_shape)
        if self.op in WEIGHTED_OPS:
            shape = self.weight_shape
            assert shape is not None
            return 2 * outputs * math.prod(shape[1:])  # each output reads one filter: Cin/groups x kh x kw
        if self.op in COPY_OPS:
            return 0
        if self.op == RESIZE_ADD_RELU:
            return 2 * outputs  # the Add and the ReLU; ResizeNearest only copies
        if self.op == ADD:
            return outputs * (len(self.inputs) - 1 + (self.activation != NONE))
        if self.op == GLOBAL_AVGPOOL:
            return _count(self.in_shape)  # every input summed, and one scaling per output
        kh, kw = self.kernel  # type: ignore[misc]
        if self.op == MAXPOOL_RELU:
            return outputs * (kh * kw - 1 + 1)  # comparisons in the window, then the ReLU
        if self.op == MAXPOOL:
            return outputs * (kh * kw - 1)
        return outputs * kh * kw  # AVGPOOL: the window's sum, then one scaling

    @property
    def weight_count(self) -> int:
        """Weights and bias (a folded BatchNorm is in both)."""
        shape = self.weight_shape
        return 0 if shape is None else math.prod(shape) + self.out_channels

    @property
    def bytes(self) -> int:
        """Compulsory memory traffic: every input, weight and output element moved once."""
        in_elems = sum(_count(shape) for shape in self.in_shapes)
        return (in_elems + self.weight_count + _count(self.out_shape)) * self.dtype_bytes

    @property
    def arithmetic_intensity(self) -> float:
        return self.flops / self.bytes

    def describe(self) -> str:
        """What the layer computes, in words, for messages: e.g. 'depthwise conv2d 3x3 stride 2 + relu6'."""
        text = self.op
        if self.op == CONV:
            if self.depthwise:
                text = "depthwise conv2d"
            elif self.groups > 1:
                text = f"grouped conv2d ({self.groups} groups)"
            kh, kw = self.kernel  # type: ignore[misc]
            text += f" {kh}x{kw}" + (f" stride {self.stride}" if self.stride != 1 else "")
            text += f" padding {self.padding}" if self.padding != kh // 2 else ""  # not "same"
        return text + (f" + {self.activation}" if self.activation != NONE else "")

    def workload_key(self) -> str:
        """Layers with the same key compute the same function on different data (tuning reuse)."""
        return "{}_{}_{}x{}_k{}_s{}_p{}{}{}".format(
            self.op, "x".join(map(str, self.in_shape)), self.out_channels, self.out_shape[2 if len(self.out_shape) == 4 else 1],
            "x".join(map(str, self.kernel or ())), self.stride, self.padding,
            f"_g{self.groups}" if self.groups != 1 else "",
            f"_{self.activation}" if self.activation != NONE else "",
        )


@dataclass(frozen=True)
class ModelConfig(ABC):
    """What every model has: a name, the input it takes and the seed of its weights and input.

    Each architecture is a subclass holding its own parameters and laying out its layers; a
    preset is a named instance (harness.model.PRESETS).
    """

    name: str
    input_shape: Shape
    seed: int = 0

    @abstractmethod
    def lay_out(self, b: TableBuilder) -> None:
        """Append the network's layers to `b`, in execution order."""

    def parameters(self) -> dict[str, Any]:
        """The architecture's own parameters (a result's model block records them)."""
        common = {f.name for f in fields(ModelConfig)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in common}


@dataclass(frozen=True)
class LayerTable:
    config: ModelConfig
    layers: tuple[Layer, ...] = field(default_factory=tuple)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, layer_id: str) -> Layer:
        for layer in self.layers:
            if layer.id == layer_id:
                return layer
        raise KeyError(layer_id)

    @property
    def ids(self) -> list[str]:
        return [layer.id for layer in self.layers]

    @property
    def convs(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.op == CONV]

    @property
    def weighted(self) -> list[Layer]:
        """The layers with weights (conv and linear), in table order: the order weights are drawn in."""
        return [layer for layer in self.layers if layer.op in WEIGHTED_OPS]

    @property
    def total_flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def conv_flops(self) -> int:
        return sum(layer.flops for layer in self.convs)

    @property
    def conv_linear_flops(self) -> int:
        """What torch.utils.flop_counter counts: convolutions and matrix products only."""
        return sum(layer.flops for layer in self.weighted)

    @property
    def output_id(self) -> str:
        return self.layers[-1].id

    def shape_of(self, layer_id: str) -> Shape:
        """The shape of a layer's output, or of the network input for INPUT."""
        return self.config.input_shape if layer_id == INPUT else self[layer_id].out_shape


def _count(shape: Shape) -> int:
    return math.prod(shape)


def _act_members(activation: str) -> tuple[str, ...]:
    return () if activation == NONE else (activation,)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def pool_out(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size: with ceil_mode, a last window must start inside the input."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class TableBuilder:
    """Appends rows, computing each layer's output shape from its inputs' shapes.

    Every method takes the new layer's id and the ids it reads, and returns the new id, so a
    network reads as `x = b.conv("layer1.0.conv1", x, 64, 3, padding=1, activation=RELU)`.
    """

    def __init__(self, input_shape: Shape) -> None:
        self.input_shape = input_shape
        self.layers: list[Layer] = []
        self._shapes: dict[str, Shape] = {INPUT: input_shape}

    def shape(self, layer_id: str) -> Shape:
        """The output shape of a layer laid out so far (or of INPUT)."""
        try:
            return self._shapes[layer_id]
        except KeyError:
            raise ValueError(f"{layer_id!r} is not laid out before the layer that reads it") from None

    def _add(self, layer_id: str, op: str, members: tuple[str, ...], inputs: tuple[str, ...],
             out_shape: Shape, **attrs: Any) -> str:
        if layer_id in self._shapes:
            raise ValueError(f"layer id {layer_id!r} is used twice")
        if min(out_shape) < 1:
            raise ValueError(f"layer {layer_id!r}: output shape {out_shape} is empty (input too small)")
        self.layers.append(Layer(layer_id, op, members, inputs, tuple(self.shape(s) for s in inputs),
                                 out_shape, **attrs))
        self._shapes[layer_id] = out_shape
        return layer_id

    def _feature_map(self, layer_id: str, src: str) -> Shape:
        shape = self.shape(src)
        if len(shape) != 4:
            raise ValueError(f"layer {layer_id!r} needs an NCHW input; {src!r} is {shape}")
        return shape

    def conv(self, layer_id: str, src: str, out_channels: int, kernel: int | tuple[int, int], stride: int = 1,
             padding: int = 0, groups: int = 1, activation: str = NONE) -> str:
        n, c, h, w = self._feature_map(layer_id, src)
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        if c % groups or out_channels % groups:
            raise ValueError(f"layer {layer_id!r}: {groups} groups must divide {c} in and {out_channels} out channels")
        out = (n, out_channels, conv_out(h, kh, stride, padding), conv_out(w, kw, stride, padding))
        return self._add(layer_id, CONV, ("conv2d", "bias_add") + _act_members(activation), (src,), out,
                         kernel=(kh, kw), stride=stride, padding=padding, groups=groups, activation=activation)

    def linear(self, layer_id: str, src: str, out_features: int, activation: str = NONE) -> str:
        """Fully connected; an NCHW input is flattened first (torch.flatten(x, 1))."""
        shape = self.shape(src)
        flatten = len(shape) != 2
        members = (("flatten",) if flatten else ()) + ("linear", "bias_add") + _act_members(activation)
        return self._add(layer_id, LINEAR, members, (src,), (shape[0], out_features),
                         activation=activation, flatten=flatten)

    def _pool(self, layer_id: str, op: str, members: tuple[str, ...], src: str, kernel: int, stride: int,
              padding: int, ceil_mode: bool) -> str:
        n, c, h, w = self._feature_map(layer_id, src)
        out = (n, c, pool_out(h, kernel, stride, padding, ceil_mode), pool_out(w, kernel, stride, padding, ceil_mode))
        return self._add(layer_id, op, members, (src,), out, kernel=(kernel, kernel), stride=stride,
                         padding=padding, ceil_mode=ceil_mode)

    def maxpool(self, layer_id: str, src: str, kernel: int, stride: int, padding: int = 0,
                ceil_mode: bool = False) -> str:
        return self._pool(layer_id, MAXPOOL, ("max_pool2d",), src, kernel, stride, padding, ceil_mode)

    def avgpool(self, layer_id: str, src: str, kernel: int, stride: int, padding: int = 0,
                ceil_mode: bool = False) -> str:
        """Average pooling; padded elements count in the divisor (PyTorch's count_include_pad)."""
        return self._pool(layer_id, AVGPOOL, ("avg_pool2d",), src, kernel, stride, padding, ceil_mode)

    def global_avgpool(self, layer_id: str, src: str, flatten: bool = False) -> str:
        """The mean over H and W: (N, C, 1, 1), or (N, C) with flatten (x.mean([2, 3]))."""
        n, c, _, _ = self._feature_map(layer_id, src)
        members = ("global_avg_pool2d",) + (("flatten",) if flatten else ())
        return self._add(layer_id, GLOBAL_AVGPOOL, members, (src,), (n, c) if flatten else (n, c, 1, 1),
                         flatten=flatten)

    def add(self, layer_id: str, a: str, b: str, activation: str = NONE) -> str:
        if self.shape(a) != self.shape(b):
            raise ValueError(f"layer {layer_id!r} adds {self.shape(a)} and {self.shape(b)}")
        return self._add(layer_id, ADD, ("add",) + _act_members(activation), (a, b), self.shape(a),
                         activation=activation)

    def concat(self, layer_id: str, *srcs: str) -> str:
        """Along the channel axis, in the order given."""
        shapes = [self._feature_map(layer_id, s) for s in srcs]
        if len({(n, h, w) for n, _, h, w in shapes}) != 1:
            raise ValueError(f"layer {layer_id!r} concatenates maps of different sizes: {shapes}")
        n, _, h, w = shapes[0]
        return self._add(layer_id, CONCAT, ("concat",), tuple(srcs), (n, sum(s[1] for s in shapes), h, w))

    def channel_shuffle(self, layer_id: str, src: str, groups: int) -> str:
        """ShuffleNet's shuffle: channels viewed as (groups, C / groups), transposed, flattened."""
        shape = self._feature_map(layer_id, src)
        if shape[1] % groups:
            raise ValueError(f"layer {layer_id!r}: {groups} groups must divide {shape[1]} channels")
        return self._add(layer_id, CHANNEL_SHUFFLE, ("channel_shuffle",), (src,), shape, groups=groups)

    def channel_slice(self, layer_id: str, src: str, start: int, stop: int) -> str:
        """Channels [start, stop) of the input (one half of torch.chunk(x, 2, dim=1), say)."""
        n, c, h, w = self._feature_map(layer_id, src)
        if not 0 <= start < stop <= c:
            raise ValueError(f"layer {layer_id!r}: channels [{start}, {stop}) of {c}")
        return self._add(layer_id, CHANNEL_SLICE, ("slice",), (src,), (n, stop - start, h, w), channels=(start, stop))

    def resize_nearest(self, layer_id: str, src: str, scale: int) -> str:
        n, c, h, w = self._feature_map(layer_id, src)
        return self._add(layer_id, RESIZE_NEAREST, ("resize_nearest",), (src,), (n, c, h * scale, w * scale))

    # The UNet study's fused blocks, exactly as its history recorded them.

    def maxpool_relu(self, layer_id: str, src: str) -> str:
        n, c, h, w = self._feature_map(layer_id, src)
        return self._add(layer_id, MAXPOOL_RELU, ("max_pool2d", "relu"), (src,), (n, c, h // 2, w // 2),
                         kernel=(2, 2), stride=2)

    def resize_add_relu(self, layer_id: str, src: str, skip: str) -> str:
        n, c, h, w = self._feature_map(layer_id, src)
        out = (n, c, h * 2, w * 2)
        if self.shape(skip) != out:
            raise ValueError(f"layer {layer_id!r}: skip {skip!r} is {self.shape(skip)}, not {out}")
        return self._add(layer_id, RESIZE_ADD_RELU, ("resize_nearest", "add", "relu"), (src, skip), out)


def build_layer_table(config: ModelConfig) -> LayerTable:
    """The table of one model: its layers as config.lay_out() appends them."""
    b = TableBuilder(config.input_shape)
    config.lay_out(b)
    if not b.layers:
        raise ValueError(f"model {config.name!r} has no layers")
    return LayerTable(config, tuple(b.layers))

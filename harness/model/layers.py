"""The UNet as a table of layers: the one description every build, result and report shares.

A row is a *layer* in the sense of the UNet study: one convolution with its bias and ReLU, one
MaxPool/ReLU block, or one ResizeNearest/Add/ReLU block. Rows are in execution order, and each
names the rows it reads, so the table is also the network's graph: the PyTorch module, the
NNPACK build and the TVM builds are all generated from it, which is what keeps their layer ids
identical.

FLOPs follow the convention of the field (and of torch.utils.flop_counter): a convolution
costs 2 x multiply-adds of the *direct* algorithm, bias and activation not counted. Winograd
and FFT builds do fewer real operations and are credited with these same "effective" FLOPs,
so GFLOP/s is comparable across builds and can exceed the arithmetic peak.
"""
from __future__ import annotations

from dataclasses import dataclass, field

Shape = tuple[int, int, int, int]  # NCHW

CONV = "conv2d"
MAXPOOL_RELU = "maxpool_relu"
RESIZE_ADD_RELU = "resize_add_relu"
OP_KINDS = (CONV, MAXPOOL_RELU, RESIZE_ADD_RELU)

INPUT = "input"


@dataclass(frozen=True)
class UNetConfig:
    """What a UNet is made of; a preset is just a named instance."""

    name: str
    input_shape: Shape = (1, 3, 256, 256)
    width: int = 32  # channels of the first level; each level down doubles them
    depth: int = 4  # number of MaxPool steps (and of ResizeNearest steps back up)
    out_channels: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        n, c, h, w = self.input_shape
        if min(n, c, h, w, self.width, self.depth, self.out_channels) < 1:
            raise ValueError(f"model {self.name!r}: every size must be positive")
        if h % (1 << self.depth) or w % (1 << self.depth):
            raise ValueError(
                f"model {self.name!r}: input {h}x{w} must be divisible by 2**depth = {1 << self.depth}"
            )


@dataclass(frozen=True)
class Layer:
    """One row of the layer table."""

    id: str
    op: str  # one of OP_KINDS
    members: tuple[str, ...]  # the primitive ops fused into this layer, in order
    inputs: tuple[str, ...]  # ids of the layers read (INPUT for the network input)
    in_shape: Shape  # shape of inputs[0]
    out_shape: Shape
    kernel: tuple[int, int] | None = None  # (kh, kw); the pooling window for MaxPool
    stride: int = 1
    padding: int = 0
    relu: bool = False  # conv only: is a ReLU fused after the bias?
    dtype_bytes: int = 4

    @property
    def flops(self) -> int:
        """Effective FLOPs: 2 x MACs of the direct convolution; element ops for the others."""
        n, c_out, h_out, w_out = self.out_shape
        outputs = n * c_out * h_out * w_out
        if self.op == CONV:
            kh, kw = self.kernel  # type: ignore[misc]
            return 2 * outputs * self.in_shape[1] * kh * kw
        if self.op == MAXPOOL_RELU:
            kh, kw = self.kernel  # type: ignore[misc]
            return outputs * (kh * kw - 1 + 1)  # comparisons in the window, then the ReLU
        return 2 * outputs  # the Add and the ReLU; ResizeNearest only copies

    @property
    def weight_count(self) -> int:
        if self.op != CONV:
            return 0
        kh, kw = self.kernel  # type: ignore[misc]
        return self.out_shape[1] * self.in_shape[1] * kh * kw + self.out_shape[1]

    @property
    def bytes(self) -> int:
        """Compulsory memory traffic: every input, weight and output element moved once."""
        in_elems = _count(self.in_shape)
        if self.op == RESIZE_ADD_RELU:
            in_elems += _count(self.out_shape)  # the skip connection added in
        return (in_elems + self.weight_count + _count(self.out_shape)) * self.dtype_bytes

    @property
    def arithmetic_intensity(self) -> float:
        return self.flops / self.bytes

    @property
    def in_channels(self) -> int:
        return self.in_shape[1]

    @property
    def out_channels(self) -> int:
        return self.out_shape[1]

    def workload_key(self) -> str:
        """Layers with the same key compute the same function on different data (tuning reuse)."""
        return "{}_{}_{}x{}_k{}_s{}_p{}{}".format(
            self.op, "x".join(map(str, self.in_shape)), self.out_channels, self.out_shape[2],
            "x".join(map(str, self.kernel or ())), self.stride, self.padding,
            "_relu" if self.relu else "",
        )


@dataclass(frozen=True)
class LayerTable:
    config: UNetConfig
    layers: tuple[Layer, ...] = field(default_factory=tuple)

    def __iter__(self):
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
    def total_flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def conv_flops(self) -> int:
        return sum(layer.flops for layer in self.convs)

    @property
    def output_id(self) -> str:
        return self.layers[-1].id


def _count(shape: Shape) -> int:
    n, c, h, w = shape
    return n * c * h * w


class _TableBuilder:
    """Appends rows while tracking the current tensor's shape."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []

    def shape_of(self, layer_id: str, input_shape: Shape) -> Shape:
        return input_shape if layer_id == INPUT else next(
            layer.out_shape for layer in self.layers if layer.id == layer_id
        )

    def conv(self, layer_id: str, src: str, src_shape: Shape, out_channels: int, relu: bool) -> str:
        n, _, h, w = src_shape
        members = ("conv2d", "bias_add") + (("relu",) if relu else ())
        self.layers.append(Layer(layer_id, CONV, members, (src,), src_shape,
                                 (n, out_channels, h, w), kernel=(3, 3), padding=1, relu=relu))
        return layer_id

    def maxpool_relu(self, layer_id: str, src: str, src_shape: Shape) -> str:
        n, c, h, w = src_shape
        self.layers.append(Layer(layer_id, MAXPOOL_RELU, ("max_pool2d", "relu"), (src,), src_shape,
                                 (n, c, h // 2, w // 2), kernel=(2, 2), stride=2))
        return layer_id

    def resize_add_relu(self, layer_id: str, src: str, src_shape: Shape, skip: str) -> str:
        n, c, h, w = src_shape
        self.layers.append(Layer(layer_id, RESIZE_ADD_RELU, ("resize_nearest", "add", "relu"),
                                 (src, skip), src_shape, (n, c, h * 2, w * 2), stride=1))
        return layer_id


def build_layer_table(config: UNetConfig) -> LayerTable:
    """Lay out the UNet of the study: 3x3 convs, Conv->MaxPool->ReLU going down,
    Conv->ResizeNearest->Add(skip)->ReLU coming up, additive skips, a 3x3 head.

    Level l has width * 2**l channels. Going down, the second conv of a level has no ReLU of
    its own: its output is the skip, and the MaxPool/ReLU block activates it.
    """
    b = _TableBuilder()
    shape = lambda lid: b.shape_of(lid, config.input_shape)  # noqa: E731
    x = INPUT
    skips: list[str] = []
    for level in range(config.depth):
        channels = config.width << level
        x = b.conv(f"enc{level}.conv1", x, shape(x), channels, relu=True)
        x = b.conv(f"enc{level}.conv2", x, shape(x), channels, relu=False)
        skips.append(x)
        x = b.maxpool_relu(f"enc{level}.pool", x, shape(x))
    bottom = config.width << config.depth
    x = b.conv("mid.conv1", x, shape(x), bottom, relu=True)
    x = b.conv("mid.conv2", x, shape(x), bottom, relu=True)
    for level in reversed(range(config.depth)):
        channels = config.width << level
        # Reduce channels at the coarse resolution, where it is 4x cheaper, then upsample.
        x = b.conv(f"dec{level}.conv0", x, shape(x), channels, relu=False)
        x = b.resize_add_relu(f"dec{level}.up", x, shape(x), skips[level])
        x = b.conv(f"dec{level}.conv1", x, shape(x), channels, relu=True)
    b.conv("head.conv", x, shape(x), config.out_channels, relu=False)
    return LayerTable(config, tuple(b.layers))

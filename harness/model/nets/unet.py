"""The UNet of the study: 3x3 convs, Conv->MaxPool->ReLU going down, Conv->ResizeNearest->
Add(skip)->ReLU coming up, additive skips, a 3x3 head."""
from __future__ import annotations

from dataclasses import dataclass

from harness.model.layers import INPUT, NONE, RELU, ModelConfig, Shape, TableBuilder


@dataclass(frozen=True)
class UNetConfig(ModelConfig):
    """What a UNet is made of; a preset is just a named instance."""

    input_shape: Shape = (1, 3, 256, 256)
    width: int = 32  # channels of the first level; each level down doubles them
    depth: int = 4  # number of MaxPool steps (and of ResizeNearest steps back up)
    out_channels: int = 3

    def __post_init__(self) -> None:
        n, c, h, w = self.input_shape
        if min(n, c, h, w, self.width, self.depth, self.out_channels) < 1:
            raise ValueError(f"model {self.name!r}: every size must be positive")
        if h % (1 << self.depth) or w % (1 << self.depth):
            raise ValueError(
                f"model {self.name!r}: input {h}x{w} must be divisible by 2**depth = {1 << self.depth}"
            )

    def lay_out(self, b: TableBuilder) -> None:
        """Level l has width * 2**l channels. Going down, the second conv of a level has no ReLU
        of its own: its output is the skip, and the MaxPool/ReLU block activates it."""
        x = INPUT
        skips: list[str] = []
        for level in range(self.depth):
            channels = self.width << level
            x = _conv3x3(b, f"enc{level}.conv1", x, channels, RELU)
            x = _conv3x3(b, f"enc{level}.conv2", x, channels, NONE)
            skips.append(x)
            x = b.maxpool_relu(f"enc{level}.pool", x)
        bottom = self.width << self.depth
        x = _conv3x3(b, "mid.conv1", x, bottom, RELU)
        x = _conv3x3(b, "mid.conv2", x, bottom, RELU)
        for level in reversed(range(self.depth)):
            channels = self.width << level
            # Reduce channels at the coarse resolution, where it is 4x cheaper, then upsample.
            x = _conv3x3(b, f"dec{level}.conv0", x, channels, NONE)
            x = b.resize_add_relu(f"dec{level}.up", x, skips[level])
            x = _conv3x3(b, f"dec{level}.conv1", x, channels, RELU)
        _conv3x3(b, "head.conv", x, self.out_channels, NONE)


def _conv3x3(b: TableBuilder, layer_id: str, src: str, out_channels: int, activation: str) -> str:
    return b.conv(layer_id, src, out_channels, 3, padding=1, activation=activation)

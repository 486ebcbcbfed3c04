"""ResNet with basic blocks (ResNet-18/34), as torchvision.models.resnet lays it out.

Stem: 7x7/2 conv, 3x3/2 max pool. Each stage doubles the channels; its first block strides by
2 (except the first stage's) and has a 1x1/2 `downsample` conv on the shortcut. A block is
conv1 (3x3, ReLU), conv2 (3x3), the shortcut, then the add and its ReLU, in torchvision's
order of execution. Global average pool, fully connected classifier.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.model.layers import INPUT, RELU, ModelConfig, Shape, TableBuilder

WIDTH = 64  # channels of the stem and the first stage; each stage doubles them (fixed in torchvision)


@dataclass(frozen=True)
class ResNetConfig(ModelConfig):
    input_shape: Shape = (1, 3, 224, 224)
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # basic blocks per stage: ResNet-18
    num_classes: int = 1000

    def lay_out(self, b: TableBuilder) -> None:
        x = b.conv("conv1", INPUT, WIDTH, 7, stride=2, padding=3, activation=RELU)
        x = b.maxpool("maxpool", x, 3, stride=2, padding=1)
        for stage, count in enumerate(self.blocks):
            channels = WIDTH << stage
            for i in range(count):
                stride = 2 if i == 0 and stage > 0 else 1
                x = _basic_block(b, f"layer{stage + 1}.{i}", x, channels, stride)
        x = b.global_avgpool("avgpool", x)
        b.linear("fc", x, self.num_classes)


def _basic_block(b: TableBuilder, name: str, x: str, channels: int, stride: int) -> str:
    y = b.conv(f"{name}.conv1", x, channels, 3, stride=stride, padding=1, activation=RELU)
    y = b.conv(f"{name}.conv2", y, channels, 3, padding=1)
    shortcut = x
    if stride != 1 or b.shape(x)[1] != channels:
        shortcut = b.conv(f"{name}.downsample", x, channels, 1, stride=stride)
    return b.add(f"{name}.add", y, shortcut, activation=RELU)

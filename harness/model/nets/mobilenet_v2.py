"""MobileNetV2, as torchvision.models.mobilenetv2 lays it out.

features.0: 3x3/2 conv, ReLU6. Then inverted residual blocks features.1 ... features.17, each
`expand` (1x1, ReLU6; absent when the expansion is 1), `dw` (3x3 depthwise, ReLU6),
`project` (1x1, linear) and, where the block keeps its shape, `add` (no activation).
features.18: 1x1 conv to the last channels, ReLU6. Global average pool, `classifier` (the
fully connected layer; dropout does nothing at inference).
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.model.layers import INPUT, RELU6, ModelConfig, Shape, TableBuilder

# torchvision's inverted_residual_setting: expansion t, channels c, repeats n, first stride s.
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: the nearest multiple of divisor, never 10 % below v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


@dataclass(frozen=True)
class MobileNetV2Config(ModelConfig):
    input_shape: Shape = (1, 3, 224, 224)
    width_mult: float = 1.0
    num_classes: int = 1000

    def lay_out(self, b: TableBuilder) -> None:
        channels = make_divisible(32 * self.width_mult)
        last = make_divisible(1280 * max(1.0, self.width_mult))
        x = b.conv("features.0", INPUT, channels, 3, stride=2, padding=1, activation=RELU6)
        index = 1
        for t, c, n, s in SETTING:
            out = make_divisible(c * self.width_mult)
            for i in range(n):
                x = _inverted_residual(b, f"features.{index}", x, out, s if i == 0 else 1, t)
                index += 1
        x = b.conv(f"features.{index}", x, last, 1, activation=RELU6)
        x = b.global_avgpool("avgpool", x)
        b.linear("classifier", x, self.num_classes)


def _inverted_residual(b: TableBuilder, name: str, x: str, out: int, stride: int, expand: int) -> str:
    inp = b.shape(x)[1]
    hidden = int(round(inp * expand))
    y = x if expand == 1 else b.conv(f"{name}.expand", x, hidden, 1, activation=RELU6)
    y = b.conv(f"{name}.dw", y, hidden, 3, stride=stride, padding=1, groups=hidden, activation=RELU6)
    y = b.conv(f"{name}.project", y, out, 1)
    return b.add(f"{name}.add", x, y) if stride == 1 and inp == out else y

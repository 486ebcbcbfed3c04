"""ShuffleNetV2, as torchvision.models.shufflenetv2 lays it out.

conv1: 3x3/2 conv, ReLU; 3x3/2 max pool; stages 2-4, each a strided block then stride-1
blocks; conv5: 1x1, ReLU; global average pool (x.mean([2, 3])); fc.
A strided block runs `branch1` (`dw` 3x3/2 depthwise, `1x1` with ReLU) and `branch2` (`1x1a`
with ReLU, `dw` 3x3/2 depthwise, `1x1b` with ReLU) on the whole input; a stride-1 block splits
the channels in two halves (x.chunk(2, dim=1): `chunk1`, `chunk2`), passes the first through
and runs branch2 on the second. Either way the two halves are concatenated (`concat`) and
channel-shuffled with 2 groups (`shuffle`). Depthwise convs have no activation.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.model.layers import INPUT, RELU, ModelConfig, Shape, TableBuilder


@dataclass(frozen=True)
class ShuffleNetV2Config(ModelConfig):
    input_shape: Shape = (1, 3, 224, 224)
    stages_repeats: tuple[int, int, int] = (4, 8, 4)
    stages_out_channels: tuple[int, int, int, int, int] = (24, 116, 232, 464, 1024)  # x1.0
    num_classes: int = 1000

    def lay_out(self, b: TableBuilder) -> None:
        stem, *stages, last = self.stages_out_channels
        x = b.conv("conv1", INPUT, stem, 3, stride=2, padding=1, activation=RELU)
        x = b.maxpool("maxpool", x, 3, stride=2, padding=1)
        for number, (repeats, channels) in enumerate(zip(self.stages_repeats, stages), start=2):
            for i in range(repeats):
                x = _block(b, f"stage{number}.{i}", x, channels, 2 if i == 0 else 1)
        x = b.conv("conv5", x, last, 1, activation=RELU)
        x = b.global_avgpool("globalpool", x, flatten=True)
        b.linear("fc", x, self.num_classes)


def _block(b: TableBuilder, name: str, x: str, out: int, stride: int) -> str:
    half = out // 2
    if stride > 1:
        inp = b.shape(x)[1]
        left = b.conv(f"{name}.branch1.dw", x, inp, 3, stride=stride, padding=1, groups=inp)
        left = b.conv(f"{name}.branch1.1x1", left, half, 1, activation=RELU)
        right_in = x
    else:
        channels = b.shape(x)[1]
        left = b.channel_slice(f"{name}.chunk1", x, 0, channels // 2)
        right_in = b.channel_slice(f"{name}.chunk2", x, channels // 2, channels)
    y = b.conv(f"{name}.branch2.1x1a", right_in, half, 1, activation=RELU)
    y = b.conv(f"{name}.branch2.dw", y, half, 3, stride=stride, padding=1, groups=half)
    y = b.conv(f"{name}.branch2.1x1b", y, half, 1, activation=RELU)
    out_id = b.concat(f"{name}.concat", left, y)
    return b.channel_shuffle(f"{name}.shuffle", out_id, 2)

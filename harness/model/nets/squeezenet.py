"""SqueezeNet 1.1, as torchvision.models.squeezenet lays it out (version "1_1").

conv1: 3x3/2 conv, ReLU; max pools (3x3/2, ceil_mode) after conv1, fire3 and fire5; fire2 ...
fire9 (the paper's numbering), each `squeeze` (1x1, ReLU), `expand1x1` (1x1, ReLU),
`expand3x3` (3x3, ReLU) and `concat` of the two expands; conv10 (1x1 to the classes, ReLU),
then the global average pool, flattened. Its convolutions have biases and no BatchNorm.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.model.layers import INPUT, RELU, ModelConfig, Shape, TableBuilder

# Fire modules fire2 ... fire9: (squeeze, expand1x1, expand3x3) channels; a max pool follows
# the ones named in POOL_AFTER.
FIRES = ((16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
         (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))
POOL_AFTER = {3, 5}


@dataclass(frozen=True)
class SqueezeNetConfig(ModelConfig):
    input_shape: Shape = (1, 3, 224, 224)
    num_classes: int = 1000

    def lay_out(self, b: TableBuilder) -> None:
        x = b.conv("conv1", INPUT, 64, 3, stride=2, activation=RELU)
        x = b.maxpool("maxpool1", x, 3, stride=2, ceil_mode=True)
        for number, (squeeze, e1, e3) in enumerate(FIRES, start=2):
            x = _fire(b, f"fire{number}", x, squeeze, e1, e3)
            if number in POOL_AFTER:
                x = b.maxpool(f"maxpool{number}", x, 3, stride=2, ceil_mode=True)
        x = b.conv("conv10", x, self.num_classes, 1, activation=RELU)
        b.global_avgpool("avgpool10", x, flatten=True)


def _fire(b: TableBuilder, name: str, x: str, squeeze: int, e1: int, e3: int) -> str:
    s = b.conv(f"{name}.squeeze", x, squeeze, 1, activation=RELU)
    left = b.conv(f"{name}.expand1x1", s, e1, 1, activation=RELU)
    right = b.conv(f"{name}.expand3x3", s, e3, 3, padding=1, activation=RELU)
    return b.concat(f"{name}.concat", left, right)

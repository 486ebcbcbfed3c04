"""The model: the presets, the layer table built from them, and the PyTorch reference."""
from __future__ import annotations

from harness.errors import UserError
from harness.names import check_known
from harness.model.layers import Layer, LayerTable, ModelConfig, build_layer_table
from harness.model.nets.mobilenet_v2 import MobileNetV2Config
from harness.model.nets.resnet import ResNetConfig
from harness.model.nets.shufflenet_v2 import ShuffleNetV2Config
from harness.model.nets.squeezenet import SqueezeNetConfig
from harness.model.nets.unet import UNetConfig

# Each network at its real size, and a "-small" variant of the same topology for tests (a
# 64x64 input, and fewer channels where torchvision's definition has a width parameter), small
# enough to build and run in about a second.
PRESETS: dict[str, ModelConfig] = {
    # Realistic: the size of a segmentation UNet on a Pi camera frame. ~15.9 GFLOPs.
    "unet": UNetConfig("unet", input_shape=(1, 3, 256, 256), width=32, depth=4),
    # For tests: the same topology, small enough to build and run in seconds.
    "unet-tiny": UNetConfig("unet-tiny", input_shape=(1, 3, 32, 32), width=8, depth=2),
    # ImageNet classifiers at 224x224, torchvision's architectures with BatchNorm folded.
    "resnet18": ResNetConfig("resnet18"),
    "mobilenet-v2": MobileNetV2Config("mobilenet-v2"),
    "squeezenet1.1": SqueezeNetConfig("squeezenet1.1"),
    "shufflenet-v2": ShuffleNetV2Config("shufflenet-v2"),  # x1.0
    "resnet18-small": ResNetConfig("resnet18-small", input_shape=(1, 3, 64, 64)),
    "mobilenet-v2-small": MobileNetV2Config("mobilenet-v2-small", input_shape=(1, 3, 64, 64), width_mult=0.5),
    "squeezenet1.1-small": SqueezeNetConfig("squeezenet1.1-small", input_shape=(1, 3, 64, 64)),
    "shufflenet-v2-small": ShuffleNetV2Config("shufflenet-v2-small", input_shape=(1, 3, 64, 64),
                                              stages_out_channels=(24, 48, 96, 192, 1024)),  # x0.5
}
DEFAULT_MODEL = "unet"


def get_model(name: str) -> LayerTable:
    try:
        config = PRESETS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(PRESETS)}") from None
    return build_layer_table(config)


def model_names(text: str) -> list[str]:
    """A comma list of presets ("unet, mobilenet-v2"), each once, in the order given; one
    UserError line naming what is wrong. --models, HARNESS_MODELS and the nightly share it."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"no model given; known models: {', '.join(PRESETS)}")
    return check_known(names, PRESETS, "model")


__all__ = ["PRESETS", "DEFAULT_MODEL", "get_model", "model_names", "build_layer_table", "Layer", "LayerTable", "ModelConfig",
           "UNetConfig", "ResNetConfig", "MobileNetV2Config", "SqueezeNetConfig", "ShuffleNetV2Config"]

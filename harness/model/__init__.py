"""The model: the presets, the layer table built from them, and the PyTorch reference."""
from __future__ import annotations

from harness.errors import UserError
from harness.model.layers import Layer, LayerTable, ModelConfig, build_layer_table
from harness.model.nets.unet import UNetConfig

PRESETS: dict[str, ModelConfig] = {
    # Realistic: the size of a segmentation UNet on a Pi camera frame. ~15.9 GFLOPs.
    "unet": UNetConfig("unet", input_shape=(1, 3, 256, 256), width=32, depth=4),
    # For tests: the same topology, small enough to build and run in seconds.
    "unet-tiny": UNetConfig("unet-tiny", input_shape=(1, 3, 32, 32), width=8, depth=2),
}
DEFAULT_MODEL = "unet"


def get_model(name: str) -> LayerTable:
    try:
        config = PRESETS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(PRESETS)}") from None
    return build_layer_table(config)


__all__ = ["PRESETS", "DEFAULT_MODEL", "get_model", "build_layer_table", "Layer", "LayerTable", "ModelConfig",
           "UNetConfig"]

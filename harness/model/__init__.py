"""The model: UNet presets, the layer table built from them, and the PyTorch reference."""
from __future__ import annotations

from harness.errors import UserError
from harness.model.layers import Layer, LayerTable, UNetConfig, build_layer_table

PRESETS: dict[str, UNetConfig] = {
    # Realistic: the size of a segmentation UNet on a Pi camera frame. ~15.7 GFLOPs.
    "unet": UNetConfig("unet", input_shape=(1, 3, 256, 256), width=32, depth=4),
    # For tests: the same topology, small enough to build and run in seconds.
    "unet-tiny": UNetConfig("unet-tiny", input_shape=(1, 3, 32, 32), width=8, depth=2),
}
DEFAULT_MODEL = "unet"


def get_model(name: str) -> LayerTable:
    try:
        return build_layer_table(PRESETS[name])
    except KeyError:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(PRESETS)}") from None


__all__ = ["PRESETS", "DEFAULT_MODEL", "get_model", "Layer", "LayerTable", "UNetConfig"]

"""The UNet's seeded weights and input: plain numpy, no PyTorch, so a device that runs only
TVM builds (numpy + the TVM runtime) loads exactly the numbers the host's reference used."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.model.layers import LayerTable


@dataclass(frozen=True)
class ConvWeights:
    weight: np.ndarray  # (out, in, kh, kw) float32
    bias: np.ndarray  # (out,) float32


def make_weights(table: LayerTable) -> dict[str, ConvWeights]:
    """He-initialised weights, drawn in table order from one generator seeded by the config.

    He scaling keeps activations near unit scale through ~20 layers, which matters for the
    fp16 build: unscaled random weights overflow half precision long before the head.
    """
    rng = np.random.default_rng(table.config.seed)
    weights = {}
    for layer in table.convs:
        kh, kw = layer.kernel  # type: ignore[misc]
        fan_in = layer.in_channels * kh * kw
        w = rng.standard_normal((layer.out_channels, layer.in_channels, kh, kw)) * np.sqrt(2.0 / fan_in)
        b = rng.uniform(-0.1, 0.1, layer.out_channels)
        weights[layer.id] = ConvWeights(w.astype(np.float32), b.astype(np.float32))
    return weights


def make_input(table: LayerTable) -> np.ndarray:
    rng = np.random.default_rng(table.config.seed + 1)
    return rng.uniform(0.0, 1.0, table.config.input_shape).astype(np.float32)

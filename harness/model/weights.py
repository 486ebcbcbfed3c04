"""The model's seeded weights and input: plain numpy, no PyTorch, so a device that runs only
TVM builds (numpy + the TVM runtime) loads exactly the numbers the host's reference used."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.model.layers import LayerTable


@dataclass(frozen=True)
class ConvWeights:
    """One layer's weights: a conv's (out, in / groups, kh, kw) or a linear layer's (out, in),
    and its bias (out,), float32. A folded BatchNorm is in both."""

    weight: np.ndarray
    bias: np.ndarray


def make_weights(table: LayerTable) -> dict[str, ConvWeights]:
    """He-initialised weights, drawn in table order from one generator seeded by the config.

    He scaling keeps activations near unit scale through ~20 layers, which matters for the
    fp16 build: unscaled random weights overflow half precision long before the head. The
    fan-in is what one output reads: (in / groups) x kh x kw for a conv, in for a linear layer.
    """
    rng = np.random.default_rng(table.config.seed)
    weights = {}
    for layer in table.weighted:
        shape = layer.weight_shape
        assert shape is not None
        w = rng.standard_normal(shape) * np.sqrt(2.0 / math.prod(shape[1:]))
        b = rng.uniform(-0.1, 0.1, layer.out_channels)
        weights[layer.id] = ConvWeights(w.astype(np.float32), b.astype(np.float32))
    return weights


def make_input(table: LayerTable) -> np.ndarray:
    rng = np.random.default_rng(table.config.seed + 1)
    return rng.uniform(0.0, 1.0, table.config.input_shape).astype(np.float32)

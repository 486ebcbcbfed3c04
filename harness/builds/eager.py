"""An Executable that runs the layer table eagerly with one Python callable per layer.

Shared by the PyTorch-based builds: they differ only in which function computes each layer.
"""
from __future__ import annotations

import numpy as np
import torch

from harness.model.layers import LayerTable
from harness.model.tablenet import LayerFn, run_layers
from harness.runner.measure import Clock


class EagerExecutable:
    def __init__(self, table: LayerTable, fns: dict[str, LayerFn], impls: dict[str, str]):
        self.table, self.fns, self.impls = table, fns, impls

    def run(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = torch.from_numpy(x)
            for _, out in run_layers(self.table, self.fns, torch.from_numpy(x)):
                pass
            return out.numpy()

    def run_timed(self, x: np.ndarray, clock: Clock) -> tuple[np.ndarray, dict[str, int]]:
        times: dict[str, int] = {}
        with torch.inference_mode():
            out = torch.from_numpy(x)
            t0 = clock()
            for layer, out in run_layers(self.table, self.fns, torch.from_numpy(x)):
                t1 = clock()
                times[layer.id] = t1 - t0
                t0 = clock()
            return out.numpy(), times

    def impl(self, layer_id: str) -> str:
        return self.impls[layer_id]

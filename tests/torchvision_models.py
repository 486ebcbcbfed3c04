"""torchvision.models, importable beside this machine's CPU-only torch.

PyPI's torchvision 0.28.0 wheel is the CUDA build: its compiled ops (_C.so) need
libc10_cuda.so, which torch 2.13.0+cpu does not ship, so torchvision runs without them
(torchvision.extension._has_ops() is False). Its import still registers fake kernels for two
of those ops, torchvision::nms and torchvision::qnms, and fails ("operator torchvision::nms
does not exist") because nothing defined them. The model definitions are pure Python and never
call either op, so defining the two schemas, as _C would have, lets the import through.
"""
from __future__ import annotations

import sys
from types import ModuleType

import torch

MISSING_OPS = ("nms", "qnms")
_library: torch.library.Library | None = None  # kept alive: dropping it removes the definitions


def torchvision_models() -> ModuleType:
    global _library
    try:
        import torchvision.models  # noqa: PLC0415
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # the failed import's half-initialised modules
        _library = torch.library.Library("torchvision", "FRAGMENT")
        for op in MISSING_OPS:
            _library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision.models  # noqa: PLC0415
    return torchvision.models

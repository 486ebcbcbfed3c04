"""Which layers ran a fast convolution algorithm (Winograd, FFT): their effective GFLOP/s count
work they did not do, so they may exceed the direct-method peak; every other layer may not."""
from __future__ import annotations

from typing import Any

# Substrings of a layer's impl (or, for 3x3 convolutions, of the build's name) that name a fast
# algorithm; the first match wins. NNPACK's own names: wt8x8 = Winograd F(6x6, 3x3),
# ft8x8 / ft16x16 = FFT.
FAST_ALGORITHMS = (("wt8x8", "Winograd"), ("winograd", "Winograd"),
                   ("ft8x8", "FFT"), ("ft16x16", "FFT"), ("fft", "FFT"),
                   ("nnpack:auto", "NNPACK auto (may pick Winograd or FFT)"))
# Impl labels that name a direct method: never credited with a fast algorithm by the build's name.
DIRECT_KERNELS = ("direct", "aten", "nnpack:implicit_gemm", "nnpack:direct", "tvm:depthwise", "tvm:grouped")


def fast_algorithm(build: str, layer: dict[str, Any]) -> str | None:
    """The fast algorithm behind a layer's time, if any: its GFLOP/s are then effective."""
    if layer["op"] != "conv2d":
        return None
    impl = layer["impl"].lower()
    for key, name in FAST_ALGORITHMS:
        if key in impl:
            return name
    if impl.startswith(DIRECT_KERNELS):  # e.g. fp16-winograd's direct fallback for a depthwise 3x3
        return None
    if layer.get("kernel") == [3, 3]:
        for key, name in FAST_ALGORITHMS:
            if key in build.lower():
                return name
    return None

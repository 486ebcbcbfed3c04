"""The one small interface every build implements.

A build turns the layer table and its weights into an Executable for one device. Everything
else (warm-ups, repeats, the error check, the result record) is the runner's, so every build
is measured by the same code.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.devices.config import Device
from harness.model.layers import CONV, NONE, RELU, Layer, LayerTable
from harness.model.weights import ConvWeights
from harness.runner.measure import Executable


@dataclass(frozen=True)
class BuildContext:
    table: LayerTable
    weights: dict[str, ConvWeights]
    device: Device
    # Build-specific knobs, e.g. {"force": {"enc1.conv2": "nnpack:wt8x8/precompute"}} for the
    # hybrid, or {"tuning_dir": ...} for the TVM builds.
    options: dict[str, Any] = field(default_factory=dict)
    threads: int = 1


class Build(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    precision: ClassVar[str] = "fp32"  # the dtype the arithmetic is done in
    # Largest accepted max|y - ref| / max|ref| against the fp32 PyTorch reference. Winograd
    # and FFT reorder fp32 sums, so even fp32 builds differ from the direct conv in the 1e-6s.
    tolerance: ClassVar[float] = 1e-4

    def unavailable(self, device: Device) -> str | None:
        """None if this build can run on `device`, else why not (a dependency, an ISA)."""
        return None

    def supports(self, layer: Layer) -> bool:
        """Can this build compute the layer? Every layer by default."""
        return True

    def unsupported(self, table: LayerTable) -> str | None:
        """None if this build can run every layer of `table`, else which layers it cannot.

        Checked before compiling or exporting, so that a network with layers a build was not
        written for is one clear recorded failure, not an error from deep inside a compiler."""
        return unsupported_message([layer for layer in table if not self.supports(layer)])

    def peak_dtype(self, device: Device) -> str:
        """Which of the device's peaks this build's GFLOP/s are a share of."""
        return "fp16" if self.precision == "fp16" and device.fp16_arithmetic else "fp32"

    @abstractmethod
    def compile(self, ctx: BuildContext) -> Executable:
        """Build and load in this process, for the machine this code runs on."""

    def export(self, ctx: BuildContext, out_dir: Path) -> list[Path]:
        """On the host: write the artifacts a remote `load` needs into out_dir, compiled for
        ctx.device (cross-compiled for ARM). [] for builds that compile on the device itself,
        like the PyTorch ones."""
        return []

    def load(self, ctx: BuildContext, artifact_dir: Path) -> Executable:
        """On the device: an Executable from `export`'s artifacts."""
        return self.compile(ctx)


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max |ref|: scale-free, and not blown up by near-zero references."""
    if out.shape != ref.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
    return float(np.max(np.abs(out.astype(np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


def is_study_conv(layer: Layer) -> bool:
    """A convolution of the kind the UNet study's kernels (NNPACK, the TVM templates, Winograd
    F(m x m, 3x3)) are written for: 3x3, stride 1, padding 1, one group, no activation or ReLU."""
    return (layer.op == CONV and layer.kernel == (3, 3) and layer.stride == 1 and layer.padding == 1
            and layer.groups == 1 and layer.activation in (NONE, RELU))


MAX_KINDS = 6  # unsupported kinds of layer named in a message; the rest are counted


def unsupported_message(layers: list[Layer]) -> str | None:
    """'this build does not run these layers yet: depthwise conv2d 3x3 + relu6 (features.1.dw
    and 16 more); add (features.3.add and 9 more)', or None for no layers."""
    if not layers:
        return None
    kinds: dict[str, list[str]] = {}
    for layer in layers:
        kinds.setdefault(layer.describe(), []).append(layer.id)
    parts = [f"{kind} ({ids[0]}{f' and {len(ids) - 1} more' if len(ids) > 1 else ''})"
             for kind, ids in list(kinds.items())[:MAX_KINDS]]
    if len(kinds) > MAX_KINDS:
        more = len(kinds) - MAX_KINDS
        parts.append(f"{more} more kind{'s' if more > 1 else ''}")
    return "this build does not run these layers yet: " + "; ".join(parts)


# A layer fused into another layer's kernel has no kernel of its own: it is timed 0, its label
# says where it went, the absorbing layer's label says what it took in, and a note lists them.
# ONNX Runtime's fusions (found in its profile) and the TVM builds' (planned) read the same.

def absorber_label(label: str, absorbed: list[str]) -> str:
    """The absorbing layer's label: `tvm (+enc0.pool fused in)`; `label` itself if none."""
    return label + (f" (+{', '.join(absorbed)} fused in)" if absorbed else "")


def fused_into_label(prefix: str, absorber: str, kernel: str | None = None) -> str:
    """The absorbed layer's label: `tvm:fused into enc0.conv2`, or with the kernel it ran in,
    `ort:fused into layer1.0.conv2's Conv(MLAS NCHWc)`."""
    return f"{prefix}:fused into {absorber}" + (f"'s {kernel}" if kernel else "")


def fused_note(by: str, fused_into: dict[str, str], shown: int | None = None) -> str | None:
    """'2 layer(s) fused by TVM into another layer's kernel, timed 0 there: enc0.pool into
    enc0.conv2, dec0.up into dec0.conv1' (the first `shown` of them), or None for none."""
    if not fused_into:
        return None
    pairs = [f"{lid} into {into}" for lid, into in fused_into.items()]
    more = " ..." if shown is not None and len(pairs) > shown else ""
    return (f"{len(pairs)} layer(s) fused by {by} into another layer's kernel, timed 0 there: "
            f"{', '.join(pairs[:shown])}{more}")

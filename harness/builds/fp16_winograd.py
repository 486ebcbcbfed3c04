"""`fp16-winograd`: the network in fp16 storage, every 3x3 conv a TVM-generated Winograd F(m x m, 3x3).

Convolutions are PrimFuncs written from topi's Winograd stages (harness/tuning/winograd.py) and
added to the Relax module under their layer's name, so per-layer timing still maps to layer
ids. Winograd F(m x m, 3x3) computes 3x3 stride-1 convolutions with one group only; every
other convolution (1x1, strided, 7x7, depthwise) runs the direct kernel in the same precision
(`direct:fp16-storage`, depthwise and grouped ones `direct:depthwise/fp16-storage` from the
grouped template). MaxPool/ReLU and Resize/Add/ReLU are fused fp16 kernels too
(harness/builds/fp16_layers.py); the other layers (pools, adds, concat, shuffles, linear) are
TVM's default kernels in fp16 (`tvm-fp16`). Weights are
Winograd-transformed once, here, in numpy (fp64, stored fp16). Per layer, `harness tune
--builds fp16-winograd` chooses the tile size and GEMM register tile, or the direct template in
the same precision where Winograd does not pay (3 input channels, 3 output channels).

Precision: tensors are stored in fp16 everywhere. The arithmetic is fp16 only where the device
has fp16 math (device.fp16_arithmetic: the Pi 5's A76, x86 with AVX512-FP16); there the
Winograd GEMM accumulates in fp16 too, which is what makes the format fast, and what the
tolerance below covers. Elsewhere (this Zen3 host: F16C conversions only) LLVM would widen and
round every half operation, 9x slower, so kernels load fp16, compute and accumulate in fp32,
and store fp16; the result says so in its notes and impl labels, and its GFLOP/s are a share
of the fp32 peak.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.builds.base import BuildContext
from harness.builds.fp16_layers import memory_layer_primfunc
from harness.builds.nnpack_layers import conv_kind
from harness.builds.tvm_common import (MANIFEST_FILE, Plan, TVMBuildBase, lower, make_target, registers,
                                       schedule_network, schedule_primfunc, simd_lanes)
from harness.builds.tvm_pure import tuning_database, tuning_notes, tuning_records
from harness.builds.tvm_relax import emit_relax, relax_params
from harness.devices.config import Device
from harness.model.layers import CONV, MAXPOOL_RELU, RESIZE_ADD_RELU, Layer, LayerTable
from harness.model.weights import ConvWeights
from harness.tuning.database import TuningDatabase
from harness.tuning.search import Task
from harness.tuning.conv_grouped import GroupedParams
from harness.tuning.winograd import (DirectParams, KernelParams, WinogradParams, default_params, direct_primfunc,
                                     SHIPPED_MATRICES, kernel_space, params_from_json, schedule_kernel,
                                     transform_matrices, transform_weights,
                                     winograd_primfunc)

if TYPE_CHECKING:
    from harness.tuning.tasks import KernelTimer

KIND = "fp16-winograd"
STORAGE = "float16"
UNTUNED = ":untuned"
# A single kernel's output may differ from the fp32 direct conv by this much before a tuning
# candidate counts as wrong. Measured with fp32 arithmetic: F(4x4) 2-3e-3, F(2x2) 5e-4, direct
# 5e-4, all fp16 I/O. With fp16 arithmetic the GEMM also accumulates in fp16 (unit roundoff
# 4.9e-4, growing with the reduction length): F(4x4) on unet-tiny's 32-channel mid.conv2 gave
# 1.06e-2, so fp16 math gets 3e-2, still a third of the whole network's tolerance (1e-1).
KERNEL_TOLERANCE = {"float32": 1e-2, "float16": 3e-2}


OWN_KERNEL_OPS = (MAXPOOL_RELU, RESIZE_ADD_RELU)  # harness/builds/fp16_layers.py


def no_conv_schedule(layer: Layer):
    raise AssertionError(f"{layer.id}: every conv of this build is its own kernel, scheduled already")


def compute_dtype(device: Device) -> str:
    return "float16" if device.fp16_arithmetic else "float32"


def impl_label(params: KernelParams, device: Device, tuned: bool, kind: str = "conv") -> str:
    """e.g. winograd:F4x4/fp16-storage (fp32 math), winograd-fp16:F4x4 (fp16 math),
    direct:fp16-storage, direct:depthwise/fp16-storage (the grouped template)."""
    fp16_math = device.fp16_arithmetic
    if isinstance(params, DirectParams) and isinstance(params.conv, GroupedParams):
        label = f"direct-fp16:{kind}" if fp16_math else f"direct:{kind}/fp16-storage"
    elif isinstance(params, DirectParams):
        label = "direct-fp16" if fp16_math else "direct:fp16-storage"
    else:
        label = f"winograd-fp16:{params.label}" if fp16_math else f"winograd:{params.label}/fp16-storage"
    return label if tuned else label + UNTUNED


def kernel_choice(layer: Layer, db: TuningDatabase, device: Device) -> tuple[KernelParams, str]:
    best = db.best_params(layer.workload_key())
    params = params_from_json(best) if best else default_params(layer, simd_lanes(device, compute_dtype(device)),
                                                                registers(device))
    return params, impl_label(params, device, tuned=best is not None, kind=conv_kind(layer))


def layer_kernel(layer: Layer, params: KernelParams, device: Device):
    """The layer's scheduled PrimFunc (input, weight or kpack, bias) -> output, fp16 I/O."""
    compute = compute_dtype(device)
    if isinstance(params, WinogradParams):
        func = winograd_primfunc(layer, params.m, STORAGE, compute)
    else:
        func = direct_primfunc(layer, STORAGE, compute)
    return schedule_primfunc(func, lambda sch: schedule_kernel(sch, params, simd_lanes(device, compute)))


def tile_of(impl: str) -> int | None:
    """The Winograd tile size an impl label names (F4x4 -> 4), None for the direct conv."""
    found = re.search(r"F(\d+)x\1", impl)
    return int(found.group(1)) if found else None


def kernel_weights(table: LayerTable, weights: dict[str, ConvWeights], tiles: dict[str, int | None]
                   ) -> dict[str, ConvWeights]:
    """The weights the kernels take: Winograd layers get kpack (alpha, alpha, ci, co)."""
    return {layer.id: ConvWeights(transform_weights(weights[layer.id].weight, tiles[layer.id]),
                                  weights[layer.id].bias)
            if tiles.get(layer.id) else weights[layer.id] for layer in table.weighted}


def precision_notes(device: Device) -> list[str]:
    if device.fp16_arithmetic:
        return ["fp16 storage and fp16 arithmetic (Winograd GEMM accumulates in fp16)"]
    return [f"fp16 storage, fp32 arithmetic: {device.name} ({device.cpu_model}) has no fp16 math; "
            "kernels load fp16, compute in fp32, store fp16"]


class FP16WinogradBuild(TVMBuildBase):
    """Tolerance 1e-1: max|y - ref| / max|ref| over the whole network vs fp32 PyTorch.

    fp16 has an 11-bit significand (unit roundoff 4.9e-4), and every activation, weight and
    kpack entry here is stored in it. Measured (seeded weights and input, `harness run`):
    - fp32 arithmetic (this host): unet-tiny 2.1e-3, unet 4.8e-3 (a single F(4x4) layer
      2-3e-3; the error grows with depth);
    - fp16 arithmetic with the GEMM accumulating in fp16 (the fp16-math devices' code path,
      compiled for this host, where LLVM rounds every half operation like the hardware
      does): unet-tiny 1.1e-2, unet 3.0e-2. Summing up to 512 channels x 36 in fp16 costs
      ~sqrt(n) ulps per layer, and that compounds over 19 convolutions.
    1e-1 keeps a 3x margin over the fp16-math error; a broken transform or tile is off by O(1).
    Accumulating the GEMM in fp32 on fp16 devices would move the error toward the fp32-math
    figure but give back most of the 2x fp16 FMA throughput the format is for.
    """

    name = "fp16-winograd"
    description = "Apache TVM, Winograd F(4x4,3x3) convs, fp16 storage (fp16 math where the CPU has it)"
    precision = "fp16"
    tolerance = 1e-1
    dtype = STORAGE

    def plan(self, ctx: BuildContext) -> Plan:
        used = tuning_database(ctx, KIND)
        # The UNet's memory-bound blocks have kernels of their own (fp16 storage, `compute`
        # math); every other non-conv layer is TVM's default kernel from Relax, in fp16
        # arithmetic whatever the device (emulated where it has no fp16 math).
        impls = {layer.id: ("tvm-fp16" if ctx.device.fp16_arithmetic else "tvm:fp16-storage")
                 if layer.op in OWN_KERNEL_OPS else "tvm-fp16" for layer in ctx.table}
        choices: dict[str, KernelParams] = {}
        for layer in ctx.table.convs:
            choices[layer.id], impls[layer.id] = kernel_choice(layer, used.db, ctx.device)
        compute = compute_dtype(ctx.device)
        kernels = {layer.id: layer_kernel(layer, choices[layer.id], ctx.device) if layer.op == CONV
                   else memory_layer_primfunc(layer, STORAGE, compute)
                   for layer in ctx.table if layer.op == CONV or layer.op in OWN_KERNEL_OPS}
        tiles = {lid: getattr(p, "m", None) for lid, p in choices.items()}
        weights = kernel_weights(ctx.table, ctx.weights, tiles)
        emitted = emit_relax(ctx.table, weights, dtype=STORAGE, kernels=kernels)
        mod = schedule_network(lower(emitted.mod, make_target(ctx.device)), ctx.table, no_conv_schedule,
                               skip=set(kernels))
        untuned = [lid for lid, impl in impls.items() if impl.endswith(UNTUNED)]
        return Plan(mod, emitted.params, impls, precision_notes(ctx.device) + tuning_notes([used], ctx.device, untuned),
                    tuning=tuning_records(ctx, [used]))

    def export(self, ctx: BuildContext, out_dir: Path) -> list[Path]:
        """The module and its manifest, plus the Winograd matrices its tiles use: runtime_parts
        needs them on the device, whose TVM may be runtime-only (no tvm.topi)."""
        files = super().export(ctx, out_dir)
        manifest = out_dir / MANIFEST_FILE
        doc = json.loads(manifest.read_text())
        tiles = sorted({m for layer in ctx.table.convs if (m := tile_of(doc["impls"][layer.id]))})
        doc["winograd_matrices"] = {str(m): [a.tolist() for a in transform_matrices(m)] for m in tiles}
        manifest.write_text(json.dumps(doc))
        return files

    def runtime_parts(self, ctx: BuildContext, manifest: dict[str, Any]) -> list[Any]:
        """On the device: the kernels' weights again (kpack for the Winograd layers), rebuilt
        from the seeded weights, the tile sizes the exported impls name and the host's matrices."""
        for m, mats in manifest.get("winograd_matrices", {}).items():
            SHIPPED_MATRICES[int(m)] = tuple(np.asarray(a, dtype=np.float64) for a in mats)  # type: ignore[assignment]
        tiles = {layer.id: tile_of(manifest["impls"][layer.id]) for layer in ctx.table.convs}
        return relax_params(ctx.table, kernel_weights(ctx.table, ctx.weights, tiles), STORAGE)


def winograd_tasks(table: LayerTable, device: Device, db: TuningDatabase, root: Path,
                   timer: KernelTimer | None = None) -> list[Task]:
    """One task per distinct conv workload: Winograd tiles and GEMM register tiles, then a
    few direct-template tiles; every candidate is checked against fp32 PyTorch first, and
    timed by `timer` (this machine's by default, or a board's)."""
    from harness.tuning.tasks import LOCAL, conv_data, unique_conv_layers  # noqa: PLC0415

    timer = timer or LOCAL

    target = make_target(device)
    simd = simd_lanes(device, compute_dtype(device))
    tasks = []
    for layer in unique_conv_layers(table):
        data = conv_data(layer)

        def measure(params: dict[str, Any], layer: Layer = layer, data: dict[str, np.ndarray] = data) -> list[float]:
            p = params_from_json(params)
            inputs = dict(data, w=transform_weights(data["w"], p.m)) if isinstance(p, WinogradParams) else data
            return timer.tvm_kernel(layer_kernel(layer, p, device), target, inputs, STORAGE,
                                   KERNEL_TOLERANCE[compute_dtype(device)])

        tasks.append(Task(layer.workload_key(), layer, [p.to_json() for p in kernel_space(layer, simd, registers=registers(device))],
                          measure))
    return tasks

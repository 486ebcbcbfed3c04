"""`tvm`: the network compiled by Apache TVM, every kernel TVM's own.

Each layer is one fused kernel (conv+bias+ReLU, MaxPool+ReLU, ResizeNearest+Add+ReLU, ...),
and, as in the UNet study, a MaxPool+ReLU can be computed inside the conv before it and a
ResizeNearest+Add+ReLU inside the conv after it (harness/builds/tvm_fusion.py: the patterns,
how they are reported, the tile a pooled conv needs); the option "fuse" chooses: "pools" (the
default, measured the better here), "all", "none".
Convolutions use the direct-conv template (any kernel and stride), grouped and depthwise ones
the grouped template, with the parameters found by `harness tune` for this device's CPU
(tuning/<device>/<cpu-key>/tvm-conv2d.json, or the database harness.tuning.database's
resolve_database lets stand in for it, said in the result's notes and `tuning` records); a
workload missing from the database falls back to the template's default tile and is reported
as `tvm:untuned` (`tvm:depthwise:untuned`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.builds.base import BuildContext
from harness.builds.nnpack_layers import conv_kind
from harness.builds.tvm_common import (Plan, TVMBuildBase, lower, make_target, registers, schedule_network, simd_lanes,
                                      target_dict)
from harness.builds.tvm_fusion import Fusion, fusion_kinds, plan_fusion
from harness.builds.tvm_relax import emit_relax
from harness.builds.tvm_vm import tvm_threads
from harness.devices.config import Device
from harness.model.layers import Layer
from harness.tuning.conv_direct import ConvParams, default_params, schedule_conv
from harness.tuning.conv_grouped import GroupedParams, schedule_grouped
from harness.tuning.conv_grouped import default_params as grouped_default
from harness.tuning.database import TUNING_DIR, Resolution, TuningDatabase, resolve_database

UNTUNED = ":untuned"


def tuning_root(ctx: BuildContext) -> Path:
    """tuning/, or where tests point `tuning_dir` (a string once the options have been through
    a run request's JSON)."""
    return Path(ctx.options.get("tuning_dir", TUNING_DIR))


def tuning_database(ctx: BuildContext, kind: str) -> Resolution:
    """The database of `kind` the build applies on this device's CPU, and how it was found."""
    return resolve_database(ctx.device, kind, target_dict(ctx.device), tuning_root(ctx))


def tuning_records(ctx: BuildContext, used: list[Resolution]) -> list[dict[str, Any]]:
    """The result's `tuning` list: which database each kind came from (the fingerprint hashes it)."""
    return [r.record(tuning_root(ctx)) for r in used]


ConvChoice = ConvParams | GroupedParams


def conv_choice(layer: Layer, db: TuningDatabase, device: Device) -> tuple[ConvChoice, str]:
    """The tuned template parameters for this layer, and the impl label to report: `tvm` /
    `tvm:untuned` for the direct template, `tvm:depthwise` (or grouped) / `...:untuned` for
    the grouped one."""
    best = db.best_params(layer.workload_key())
    if layer.groups > 1:
        label = f"tvm:{conv_kind(layer)}"
        if best is None:
            return grouped_default(layer, simd_lanes(device)), label + UNTUNED
        return GroupedParams.from_json(best), label
    if best is None:
        return default_params(layer, simd_lanes(device), registers(device)), "tvm" + UNTUNED
    return ConvParams.from_json(best), "tvm"


def schedule_any_conv(sch, params: ConvChoice, pool_stride: int = 0):
    """The conv template the parameters belong to, applied to one conv PrimFunc (with the pool
    of that stride fused after it: direct template only)."""
    if isinstance(params, GroupedParams):
        return schedule_grouped(sch, params)
    return schedule_conv(sch, params, pool_stride)


def conv_fusion(ctx: BuildContext, choices: dict[str, ConvChoice], impls: dict[str, str],
                db: TuningDatabase) -> Fusion:
    """What the build fuses into its direct-template convs (its option "fuse": pools by
    default, tvm_fusion's docstring says why); the tiles of pooled convs are fitted in
    `choices` and `impls` (tvm_fusion.plan_fusion)."""
    kinds = fusion_kinds(ctx.options)
    if not kinds:
        return Fusion({})
    return plan_fusion(ctx.table, choices, impls, db, simd_lanes(ctx.device), registers(ctx.device), UNTUNED,
                       kinds)


def schedule_fused_network(ctx: BuildContext, mod, choices: dict[str, ConvChoice], fusion: Fusion,
                           skip: set[str] = frozenset()):
    """schedule_network with each conv's template, told the stride of a pool fused after it."""
    return schedule_network(mod, ctx.table, lambda layer: (lambda sch: schedule_any_conv(
        sch, choices[layer.id], fusion.pool_stride(ctx.table, layer.id))), skip=skip)


def is_untuned(impl: str) -> bool:
    return UNTUNED in impl  # also when a reason follows: "tvm:untuned (nnpack: ...)"


def tuning_notes(used: list[Resolution], device: Device, untuned: list[str]) -> list[str]:
    """One line per database (whose it is: this CPU's, a stand-in's, none), then the layers
    running an untuned tile: no record for them, or (a conv with a pool fused after it) no
    measured tile that holds the pool's windows."""
    notes = [f"TVM runtime threads: {tvm_threads()}", *(r.note for r in used)]
    if untuned:
        notes.append(f"no tuned tile for {len(untuned)} conv layer(s) ({', '.join(untuned[:4])}"
                     f"{' ...' if len(untuned) > 4 else ''}): run `harness tune --device {device.name}`")
    return notes


class TVMBuild(TVMBuildBase):
    name = "tvm"
    description = "Apache TVM, fused layers, conv schedules tuned per device"
    tolerance = 1e-4

    def plan(self, ctx: BuildContext) -> Plan:
        used = tuning_database(ctx, "tvm-conv2d")
        impls = {layer.id: "tvm" for layer in ctx.table}
        choices: dict[str, ConvChoice] = {}
        for layer in ctx.table.convs:
            choices[layer.id], impls[layer.id] = conv_choice(layer, used.db, ctx.device)
        fusion = conv_fusion(ctx, choices, impls, used.db)
        emitted = emit_relax(ctx.table, ctx.weights, fused=fusion.groups)
        mod = schedule_fused_network(ctx, lower(emitted.mod, make_target(ctx.device)), choices, fusion)
        untuned = [lid for lid, impl in impls.items() if is_untuned(impl)]
        return Plan(mod, emitted.params, fusion.label(impls),
                    tuning_notes([used], ctx.device, untuned) + fusion.notes,
                    tuning=tuning_records(ctx, [used]), absorbed=fusion.absorbed)

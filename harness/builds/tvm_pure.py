"""`tvm`: the UNet compiled by Apache TVM, every kernel TVM's own.

Each layer is one fused kernel (conv+bias+ReLU, MaxPool+ReLU, ResizeNearest+Add+ReLU).
Convolutions use the direct-conv template with the parameters found by `harness tune` for this
device (tuning/<device>/tvm-conv2d.json); a workload missing from the database falls back to
the template's default tile and is reported as `tvm:untuned`.
"""
from __future__ import annotations

from pathlib import Path

from harness.builds.base import BuildContext
from harness.builds.tvm_common import Plan, TVMBuildBase, lower, make_target, schedule_network, simd_lanes, target_dict
from harness.builds.tvm_relax import emit_relax
from harness.builds.tvm_vm import tvm_threads
from harness.devices.config import Device
from harness.model.layers import Layer
from harness.tuning.conv_direct import ConvParams, default_params, schedule_conv
from harness.tuning.database import TuningDatabase, load_database


def tuning_database(ctx: BuildContext, kind: str) -> TuningDatabase:
    """The device's database of `kind`; tests point `tuning_dir` at a scratch directory (a
    string once the options have been through a run request's JSON)."""
    root = {"root": Path(ctx.options["tuning_dir"])} if "tuning_dir" in ctx.options else {}
    return load_database(ctx.device.name, kind, target_dict(ctx.device), **root)


def conv_choice(layer: Layer, db: TuningDatabase, device: Device) -> tuple[ConvParams, str]:
    """The tuned template parameters for this layer, and the impl label to report."""
    best = db.best_params(layer.workload_key())
    if best is None:
        return default_params(layer, simd_lanes(device)), "tvm:untuned"
    return ConvParams.from_json(best), "tvm"


def tuning_notes(db: TuningDatabase, device: Device, untuned: list[str]) -> list[str]:
    notes = [f"TVM runtime threads: {tvm_threads()}"]
    if untuned:
        notes.append(f"no tuning record for {len(untuned)} conv layer(s) ({', '.join(untuned[:4])}"
                     f"{' ...' if len(untuned) > 4 else ''}): run `harness tune --device {device.name}`")
    made_for = db.target.get("mcpu")
    if db.records and made_for and made_for != target_dict(device).get("mcpu"):
        notes.append(f"tuning database {db.path.name} was made on {made_for}, "
                     f"this target is {target_dict(device).get('mcpu')}: re-tune for best numbers")
    return notes


class TVMBuild(TVMBuildBase):
    name = "tvm"
    description = "Apache TVM, fused layers, conv schedules tuned per device"
    tolerance = 1e-4

    def plan(self, ctx: BuildContext) -> Plan:
        db = tuning_database(ctx, "tvm-conv2d")
        impls = {layer.id: "tvm" for layer in ctx.table}
        choices: dict[str, ConvParams] = {}
        for layer in ctx.table.convs:
            choices[layer.id], impls[layer.id] = conv_choice(layer, db, ctx.device)
        emitted = emit_relax(ctx.table, ctx.weights)
        mod = schedule_network(lower(emitted.mod, make_target(ctx.device)), ctx.table,
                               lambda layer: (lambda sch: schedule_conv(sch, choices[layer.id])))
        untuned = [lid for lid, impl in impls.items() if impl == "tvm:untuned"]
        return Plan(mod, emitted.params, impls, tuning_notes(db, ctx.device, untuned))

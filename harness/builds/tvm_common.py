"""What the TVM builds share: the target, lowering the Relax module, scheduling its kernels,
and compiling here or exporting for a device (the manifest carries what the VM needs beside
the module: labels, notes, external kernels, the layers fused into another's kernel).

Lowering runs Relax's "zero" pipeline (LegalizeOps, FuseOps, FuseTIR): the default CPU
pipeline neither fuses nor schedules. Conv kernels then get the tuned template parameters
from the tuning database for the device's CPU (or the template's default, reported as
untuned), grouped and depthwise ones their own template (harness/tuning/conv_grouped.py);
every other layer (pooling, resize, add, concat, shuffle, slice, linear), memory-bound, gets a
fixed parallel schedule.
"""
from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.builds.base import Build, BuildContext
from harness.builds.tvm_relax import func_name
from harness.devices.config import Device
from harness.model.layers import CONV, Layer, LayerTable
from harness.tuning.conv_direct import is_reduction
from harness.tuning.cpukey import VECTOR_LANES, vector_registers, vector_unit


def host_cpu() -> str:
    from tvm.target import codegen  # noqa: PLC0415

    return str(codegen.llvm_get_system_cpu())


def target_dict(device: Device) -> dict[str, Any]:
    """The device's TVM target as a dict (0.27 rejects "llvm -mcpu=..." strings)."""
    if device.target == "host":
        return {"kind": "llvm", "mcpu": host_cpu(), "num-cores": device.cores}
    target = dict(device.target)  # type: ignore[arg-type]
    target.setdefault("num-cores", device.cores)  # MetaSchedule and parallel lowering want it
    return target


def make_target(device: Device):
    import tvm  # noqa: PLC0415

    return tvm.target.Target(target_dict(device))


def simd_lanes(device: Device, dtype: str = "float32") -> int:
    """fp32 lanes of the widest vector register the target has (the template's tx unit)."""
    lanes = VECTOR_LANES[vector_unit(device.arch, device.isa)]
    return lanes * (2 if dtype == "float16" else 1)


def registers(device: Device) -> int:
    """Vector registers of the device's widest unit: how big a register tile may grow."""
    return vector_registers(device.arch, device.isa)


def lower(mod, target):
    """Legalize and fuse: one PrimFunc per Primitive layer function, named after it."""
    from tvm import relax  # noqa: PLC0415

    with target:
        return relax.get_pipeline("zero")(mod)


def primfuncs(mod) -> dict[str, Any]:
    import tvm  # noqa: PLC0415

    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def schedule_primfunc(func, schedule: Callable[[Any], Any]):
    """Apply `schedule(sch)` to one PrimFunc; returns the scheduled PrimFunc."""
    import tvm  # noqa: PLC0415

    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    schedule(sch)
    return sch.mod["main"]


MIN_PARALLEL = 64  # fewer rows than this (a linear layer's single row, say) and outputs are split instead


def parallel_outer(sch, block):
    """Fuse the block's outer data-parallel loops (all but the innermost: the output rows of an
    NCHW map) and run them in parallel; all of them where that leaves too few to share out.
    Returns the fused loop."""
    loops = sch.get_loops(block)
    spatial = [loop for loop, iv in zip(loops, sch.get(block).iter_vars) if int(iv.iter_type) == 0]
    rows = spatial[:-1] or spatial
    if _extent(sch, rows) < MIN_PARALLEL:
        rows = spatial
    outer = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    sch.parallel(outer)
    return outer


def _extent(sch, loops) -> int:
    total = 1
    for loop in loops:
        total *= int(sch.get(loop).extent)
    return total


def parallel_schedule(sch) -> None:
    """Memory-bound layers (pooling, adds, resizes, concat, shuffles, slices, linear layers) as
    one pass over the data: inline the elementwise steps, compute the rest per output row,
    rows in parallel. A step that cannot be inlined or moved into the first one's row loop
    (TVM refuses some, e.g. a reshape's index arithmetic) gets its own parallel loop."""
    from tvm.s_tir.schedule import ScheduleError  # noqa: PLC0415

    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root)[:-1]:
        if not is_reduction(sch, block):  # a pool's max or a matmul's sum stays a block
            try:
                sch.compute_inline(block)
            except ScheduleError:
                pass  # stays a block of its own
    first, *rest = sch.get_child_blocks(root)
    outer = parallel_outer(sch, first)
    for block in rest:
        try:
            sch.reverse_compute_at(block, outer)
        except ScheduleError:
            parallel_outer(sch, block)


def replace_func(mod, name: str, func):
    gv = mod.get_global_var(name)
    mod[gv] = func.with_attr("global_symbol", name)
    return mod


def schedule_network(mod, table: LayerTable, conv_schedule: Callable[[Layer], Callable[[Any], Any]],
                     skip: set[str] = frozenset()):
    """Schedule every layer's PrimFunc: convs with conv_schedule(layer), the rest in parallel."""
    funcs = primfuncs(mod)
    for layer in table:
        name = func_name(layer.id)
        if layer.id in skip or name not in funcs:
            continue
        schedule = conv_schedule(layer) if layer.op == CONV else parallel_schedule
        mod = replace_func(mod, name, schedule_primfunc(funcs[name], schedule))
    return mod


def compile_module(mod, target):
    from tvm import relax  # noqa: PLC0415

    return relax.build(mod, target=target)


def layer_primfunc(layer: Layer, dtype: str, target):
    """The PrimFunc FuseTIR makes for this one layer, as it appears inside the network."""
    from harness.builds.tvm_relax import emit_layer  # noqa: PLC0415

    funcs = primfuncs(lower(emit_layer(layer, dtype), target))
    return funcs[func_name(layer.id)].with_attr("global_symbol", "main")


@dataclass
class Plan:
    """A TVM build decided: the scheduled module and what the VM needs beside it."""

    mod: Any  # the lowered, scheduled IRModule
    params: list[Any]  # main's weight arguments
    impls: dict[str, str]  # layer id -> implementation label
    notes: list[str] = field(default_factory=list)
    external: dict[str, str] = field(default_factory=dict)  # layer id -> global function name
    tuning: list[dict[str, Any]] = field(default_factory=list)  # the databases applied (Resolution.record)
    absorbed: dict[str, str] = field(default_factory=dict)  # layer id -> the conv whose kernel computes it


MODULE_FILE = "module.so"
MANIFEST_FILE = "manifest.json"


class TVMBuildBase(Build):
    """Compile a Plan here, or export it for a device (cross-compiled) and load it there."""

    def unavailable(self, device: Device) -> str | None:
        try:
            import tvm  # noqa: F401, PLC0415 - only whether it imports
        except ImportError as exc:
            return f"Apache TVM is not installed ({exc}); pip install apache-tvm==0.27.0.post1"
        return None

    @abstractmethod
    def plan(self, ctx: BuildContext) -> Plan: ...

    def runtime_parts(self, ctx: BuildContext, manifest: dict[str, Any]) -> list[Any]:
        """On the device: main's weight arguments, rebuilt from the seeded weights."""
        from harness.builds.tvm_relax import relax_params  # noqa: PLC0415

        return relax_params(ctx.table, ctx.weights, manifest.get("dtype", "float32"), manifest["external"])

    def attach_externals(self, ctx: BuildContext, impls: dict[str, str]) -> list[Any]:
        """Create and register the external kernels the module calls (none by default), where
        it will run: here for compile(), on the device for load(), never for export(). Returns
        the objects the executable must keep alive."""
        return []

    def compile(self, ctx: BuildContext):
        from harness.builds.tvm_vm import VMExecutable  # noqa: PLC0415

        p = self.plan(ctx)
        keep = self.attach_externals(ctx, p.impls)  # before the long compile: fail fast
        return VMExecutable(compile_module(p.mod, make_target(ctx.device)), p.params, ctx.table.ids, p.impls,
                            external=p.external, keepalive=keep, notes=p.notes, tuning=p.tuning,
                            absorbed=p.absorbed)

    def export(self, ctx: BuildContext, out_dir: Path) -> list[Path]:
        from harness.deploy.cross import export_for_device  # noqa: PLC0415

        p = self.plan(ctx)
        module = export_for_device(compile_module(p.mod, make_target(ctx.device)), ctx.device, out_dir / MODULE_FILE)
        manifest = out_dir / MANIFEST_FILE
        manifest.write_text(json.dumps({"build": self.name, "impls": p.impls, "notes": p.notes, "tuning": p.tuning,
                                        "external": p.external, "absorbed": p.absorbed,
                                        "dtype": getattr(self, "dtype", "float32")}))
        return [module, manifest]

    def load(self, ctx: BuildContext, artifact_dir: Path):
        import tvm  # noqa: PLC0415

        from harness.builds.tvm_vm import VMExecutable  # noqa: PLC0415

        manifest = json.loads((artifact_dir / MANIFEST_FILE).read_text())
        params = self.runtime_parts(ctx, manifest)
        keep = self.attach_externals(ctx, manifest["impls"])
        module = tvm.runtime.load_module(str(artifact_dir / MODULE_FILE))
        return VMExecutable(module, params, ctx.table.ids, manifest["impls"], external=manifest["external"],
                            keepalive=keep, notes=manifest["notes"], tuning=manifest.get("tuning"),
                            absorbed=manifest.get("absorbed", {}))  # none in a manifest from before fusion

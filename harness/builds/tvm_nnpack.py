"""`tvm-nnpack`: the hybrid. Per convolution, the fastest of TVM's tuned kernel and NNPACK's
algorithms, chosen by measurement on the device; NNPACK runs from inside the TVM module.

Candidates per conv workload: `tvm` (the tuned kernel of the `tvm` build) and
`nnpack:<algorithm>/<strategy>` for algorithm in ft8x8, ft16x16, wt8x8, implicit_gemm, direct
and strategy in compute (weights transformed per call) or precompute (transformed once at
build time, then reused), as far as NNPACK accepts the layer (candidate_impls): a depthwise
or grouped conv has no NNPACK candidate and runs TVM's kernel, labelled e.g.
`tvm:depthwise:untuned (nnpack: no grouped conv)`; a strided one on x86 has only
implicit_gemm. `harness tune --builds tvm-nnpack` measures them all and saves the winner per
workload in tuning/<device>/<cpu-key>/tvm-nnpack.json, the way a tuning log is saved.

NNPACK layers are emitted as `R.call_dps_packed` into a global function registered per layer;
it wraps the VM's tensors zero-copy through DLPack and calls NNPACK into the output buffer.
Everything else stays fused TVM code, fused as in `tvm` (harness/builds/tvm_fusion.py): a
MaxPool+ReLU into the conv before it, a ResizeNearest+Add+ReLU into the conv after it, where
that conv runs TVM's kernel (never into an NNPACK one: those layers stay their own kernels);
the option "fuse" chooses which ("pools" by default, "all", "none"). A layer can be forced to an implementation with the build
option {"force": {"enc1.conv2": "nnpack:wt8x8/precompute"}}.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.builds.base import BuildContext
from harness.builds.tvm_common import Plan, TVMBuildBase, lower, make_target, target_dict
from harness.builds.nnpack_layers import accepts, conv_shape, layer_rule, make_conv
from harness.builds.tvm_pure import (ConvChoice, conv_choice, conv_fusion, is_untuned,
                                     schedule_any_conv, schedule_fused_network, tuning_database, tuning_notes,
                                     tuning_records)
from harness.builds.tvm_relax import emit_relax
from harness.devices.config import Device
from harness.errors import UserError
from harness.kernels import nnpack
from harness.model.layers import RELU6, Layer, LayerTable
from harness.tuning.database import TuningDatabase, load_database
from harness.tuning.search import Task

if TYPE_CHECKING:
    from harness.tuning.tasks import KernelTimer

TVM_IMPL = "tvm"
NNPACK_STRATEGIES = (nnpack.Strategy.compute, nnpack.Strategy.precompute)


def candidate_impls(layer: Layer | None = None) -> list[str]:
    """`tvm` and the NNPACK algorithm/strategy pairs NNPACK accepts for `layer` (all of them
    without a layer): none for a grouped or depthwise conv, only implicit_gemm for a strided one
    on x86, and so on (nnpack.algorithm_rule)."""
    return [TVM_IMPL] + [f"nnpack:{a.name}/{s.name}"
                         for a, s in itertools.product(nnpack.CANDIDATE_ALGORITHMS, NNPACK_STRATEGIES)
                         if layer is None or accepts(layer, a, s)]


def parse_impl(impl: str) -> tuple[nnpack.Algorithm, nnpack.Strategy]:
    """`nnpack:wt8x8/precompute` -> (Algorithm.wt8x8, Strategy.precompute)."""
    try:
        kind, rest = impl.split(":", 1)
        algo, strategy = rest.split("/", 1)
        if kind != "nnpack":
            raise ValueError
        return nnpack.Algorithm[algo], nnpack.Strategy[strategy]
    except (ValueError, KeyError):
        raise UserError(f"invalid implementation {impl!r}; expected 'tvm' or one of "
                        f"{', '.join(candidate_impls()[1:])}") from None


def nnpack_spec(layer: Layer, impl: str, threads: int) -> dict[str, Any]:
    """One NNPACK candidate as JSON: what a board needs to build it without the layer table."""
    shape = conv_shape(layer)
    return {"impl": impl, "threads": threads, "relu": layer.relu, "relu6": layer.activation == RELU6,
            "shape": [shape.in_channels, shape.out_channels, shape.height, shape.width, list(shape.kernel),
                      shape.padding, shape.stride]}


def conv_from_spec(spec: dict[str, Any], weight: np.ndarray, bias: np.ndarray,
                   pool: nnpack.ThreadPool) -> nnpack.Conv2d:
    algorithm, strategy = parse_impl(spec["impl"])
    c_in, c_out, h, w, kernel, padding, stride = spec["shape"]
    shape = nnpack.ConvShape(c_in, c_out, h, w, tuple(kernel), padding, stride)
    return nnpack.Conv2d(shape, weight, bias, algorithm, strategy, relu=spec["relu"], pool=pool,
                         relu6=spec.get("relu6", False))


def make_nnpack_conv(layer: Layer, weight: np.ndarray, bias: np.ndarray, impl: str,
                     pool: nnpack.ThreadPool) -> nnpack.Conv2d:
    algorithm, strategy = parse_impl(impl)
    return make_conv(layer, weight, bias, algorithm, strategy, pool)


def time_nnpack_conv(spec: dict[str, Any], x: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                     out: np.ndarray) -> list[float]:
    """Run one NNPACK candidate into `out` (the caller verifies it), then its samples in ms.
    Runs where the candidate is measured: on this machine, or on a board over RPC."""
    from harness.tuning.tasks import time_callable  # noqa: PLC0415

    conv = conv_from_spec(spec, weight, bias, nnpack.ThreadPool(spec["threads"]))
    return time_callable(lambda: conv.run_into(x, out))  # its first call fills out


def register_nnpack_layer(name: str, conv: nnpack.Conv2d) -> None:
    """Expose one NNPACK conv to the VM as a destination-passing global: f(x, out)."""
    import torch  # noqa: PLC0415 - DLPack bridge; zero-copy both ways
    import tvm_ffi  # noqa: PLC0415

    def call(x, out) -> None:
        conv.run_into(torch.from_dlpack(x).numpy(), torch.from_dlpack(out).numpy())

    tvm_ffi.register_global_func(name, call, override=True)


def layer_choice(layer: Layer, choices: TuningDatabase, forced: dict[str, str]) -> str:
    if layer.id in forced:
        impl = forced[layer.id]
        reason = layer_rule(layer)
        if impl != TVM_IMPL and reason:
            raise UserError(f"layer {layer.id!r} cannot be forced to {impl}: nnpack: {reason}")
        return impl
    best = choices.best_params(layer.workload_key())
    return best["impl"] if best else TVM_IMPL


def tvm_label(layer: Layer, label: str) -> str:
    """The TVM kernel's label, saying why where NNPACK was never a choice: e.g.
    `tvm:depthwise:untuned (nnpack: no grouped conv)`."""
    reason = layer_rule(layer)
    return f"{label} (nnpack: {reason})" if reason else label


def global_name(table: LayerTable, layer_id: str, impl: str) -> str:
    """Deterministic, so a device loading the exported module registers the same names, and
    unique per model, layer and choice, so two hybrid modules in one process never collide."""
    return f"harness.nnpack.{table.config.name}.{layer_id}.{impl.replace(':', '.').replace('/', '.')}"


def nnpack_globals(table: LayerTable, impls: dict[str, str]) -> dict[str, str]:
    """Layer id -> the global function name of each layer that chose NNPACK."""
    return {layer.id: global_name(table, layer.id, impls[layer.id])
            for layer in table.convs if impls[layer.id].startswith("nnpack:")}


class TVMNNPACKBuild(TVMBuildBase):
    name = "tvm-nnpack"
    description = "TVM with, per layer, the fastest of its tuned kernel and NNPACK's algorithms"
    tolerance = 1e-3  # Winograd/FFT layers reorder fp32 sums

    def unavailable(self, device: Device) -> str | None:
        return super().unavailable(device) or nnpack.available()

    def attach_externals(self, ctx: BuildContext, impls: dict[str, str]) -> list[Any]:
        """Create and register the NNPACK kernels of the layers that chose NNPACK."""
        pool = nnpack.ThreadPool(ctx.threads)
        keep: list[Any] = [pool]
        for layer_id, name in nnpack_globals(ctx.table, impls).items():
            w = ctx.weights[layer_id]
            conv = make_nnpack_conv(ctx.table[layer_id], w.weight, w.bias, impls[layer_id], pool)
            register_nnpack_layer(name, conv)
            keep.append(conv)
        return keep

    def plan(self, ctx: BuildContext) -> Plan:
        used = [tuning_database(ctx, "tvm-conv2d"), tuning_database(ctx, "tvm-nnpack")]
        tvm_db, choices = (u.db for u in used)
        forced = dict(ctx.options.get("force", {}))
        unknown = set(forced) - {layer.id for layer in ctx.table.convs}
        if unknown:
            raise UserError(f"forced layer {sorted(unknown)[0]!r} is not a convolution of {ctx.table.config.name}")
        impls = {layer.id: TVM_IMPL for layer in ctx.table}
        tvm_params: dict[str, ConvChoice] = {}
        for layer in ctx.table.convs:
            impl = layer_choice(layer, choices, forced)
            if impl == TVM_IMPL:
                tvm_params[layer.id], impls[layer.id] = conv_choice(layer, tvm_db, ctx.device)
            else:
                parse_impl(impl)
                impls[layer.id] = impl
        fusion = conv_fusion(ctx, tvm_params, impls, tvm_db)  # TVM's convs only: NNPACK's are external
        for lid in tvm_params:
            impls[lid] = tvm_label(ctx.table[lid], impls[lid])
        external = nnpack_globals(ctx.table, impls)
        emitted = emit_relax(ctx.table, ctx.weights, external=external, fused=fusion.groups)
        mod = schedule_fused_network(ctx, lower(emitted.mod, make_target(ctx.device)), tvm_params, fusion,
                                     skip=set(external))
        untuned = [lid for lid, impl in impls.items() if is_untuned(impl)]
        notes = tuning_notes(used, ctx.device, untuned) + fusion.notes
        unchosen = [layer.id for layer in ctx.table.convs
                    if layer.id not in forced and layer_rule(layer) is None
                    and choices.best_params(layer.workload_key()) is None]
        if unchosen:
            notes.append(f"no hybrid choice for {len(unchosen)} conv layer(s), TVM used: run "
                         f"`harness tune --device {ctx.device.name} --builds tvm-nnpack`")
        return Plan(mod, emitted.params, fusion.label(impls), notes, external, tuning_records(ctx, used),
                    absorbed=fusion.absorbed)


def hybrid_tasks(table: LayerTable, device: Device, db: TuningDatabase, root: Path,
                 timer: KernelTimer | None = None) -> list[Task]:
    """Per conv workload, every candidate implementation, measured by `timer` (this machine's
    by default, or a board's)."""
    from harness.builds.tvm_common import layer_primfunc, schedule_primfunc  # noqa: PLC0415
    from harness.tuning.tasks import LOCAL, conv_data, unique_conv_layers  # noqa: PLC0415

    timer = timer or LOCAL
    target = make_target(device)
    tvm_db = load_database(device, "tvm-conv2d", target_dict(device), root)  # just tuned for this CPU
    tasks = []
    for layer in unique_conv_layers(table):
        if layer_rule(layer):
            continue  # no NNPACK candidate: the hybrid runs TVM's kernel, nothing to choose
        data = conv_data(layer)

        def measure(params: dict[str, Any], layer=layer, data=data) -> list[float]:
            if params["impl"] == TVM_IMPL:
                choice, _ = conv_choice(layer, tvm_db, device)
                func = schedule_primfunc(layer_primfunc(layer, "float32", target),
                                         lambda sch: schedule_any_conv(sch, choice))
                return timer.tvm_kernel(func, target, data, "float32", 1e-4)
            parse_impl(params["impl"])
            return timer.nnpack_conv(nnpack_spec(layer, params["impl"], device.cores), data,
                                     TVMNNPACKBuild.tolerance)

        tasks.append(Task(layer.workload_key(), layer, [{"impl": i} for i in candidate_impls(layer)], measure))
    return tasks

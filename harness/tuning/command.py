"""`harness tune`: search kernels for a device's TVM builds and store them in its databases.

The databases written are the current CPU's own, tuning/<device>/<cpu-key>/ (harness/tuning/
cpukey.py): never a stand-in's. A database still in the old per-device layout that was made on
this CPU is continued from, into the new place (the old file can then be removed).

Local devices time candidates on this machine; ssh and rpc devices on their boards
(harness.tuning.remote), with the same databases, budget and resumption.

Order matters: the hybrid's choice table compares NNPACK against the *tuned* TVM kernel, so
`tvm-nnpack` tunes `tvm`'s convolutions first.
"""
from __future__ import annotations

import contextlib
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.devices.config import Device
from harness.errors import UserError
from harness.model.layers import LayerTable
from harness.tuning.cpukey import cpu_key
from harness.tuning.database import OLD_LAYOUT, OWN, TUNING_DIR, TuningDatabase, database_path, resolve_database
from harness.tuning.search import Budget, Task, run_search
from harness.tuning.tasks import LOCAL, KernelTimer

TUNABLE = ("tvm", "tvm-nnpack", "fp16-winograd")
# build -> the databases it needs, in the order they must be tuned
NEEDS = {"tvm": ["tvm-conv2d"], "tvm-nnpack": ["tvm-conv2d", "tvm-nnpack"], "fp16-winograd": ["fp16-winograd"]}


def task_factory(kind: str) -> Callable[[LayerTable, Device, TuningDatabase, Path, KernelTimer], list[Task]]:
    """The task builder of one database kind (imported late: each pulls in TVM or NNPACK)."""
    if kind == "tvm-conv2d":
        from harness.builds.tvm_common import make_target, simd_lanes  # noqa: PLC0415
        from harness.tuning.tasks import tvm_conv_tasks  # noqa: PLC0415

        return lambda table, device, db, root, timer: tvm_conv_tasks(table, device, make_target(device),
                                                                     simd_lanes(device), timer)
    if kind == "tvm-nnpack":
        from harness.builds.tvm_nnpack import hybrid_tasks  # noqa: PLC0415

        return hybrid_tasks
    if kind == "fp16-winograd":
        from harness.builds.fp16_winograd import winograd_tasks  # noqa: PLC0415

        return winograd_tasks
    raise ValueError(kind)


def kinds_for(builds: list[str]) -> list[str]:
    unknown = [b for b in builds if b not in TUNABLE]
    if unknown:
        raise UserError(f"build {unknown[0]!r} has nothing to tune; tunable builds: {', '.join(TUNABLE)}")
    kinds: list[str] = []
    for build in builds:
        kinds += [k for k in NEEDS[build] if k not in kinds]
    return kinds


def tune(device: Device, table: LayerTable, builds: list[str], budget: Budget, console: Console,
         root: Path = TUNING_DIR, restart: bool = False,
         candidate_timeout_s: float | None = None, layers: list[str] | None = None) -> list[TuningDatabase]:
    """Tune what `builds` need for `table` on `device`. restart forgets this model's earlier
    measurements first (after a compiler upgrade, or to re-measure on a quiet machine).
    layers: only these conv layers' workloads (a layer that was just changed), not the model's all."""
    from harness.builds import get_build  # noqa: PLC0415

    kinds = kinds_for(builds)  # bad input fails before connecting to anything
    workloads = workloads_of(table, layers) if layers else None
    for build in builds:
        reason = get_build(build).unsupported(table)
        if reason:
            raise UserError(f"{build} cannot tune model {table.config.name!r}: {reason}")
    if candidate_timeout_s is not None and device.transport == "local":
        raise UserError("--candidate-timeout applies to ssh and rpc devices (a local candidate runs in this process)")
    key = cpu_key(device)  # a device whose cpu cannot name a folder fails here, before connecting
    console.print(f"tuning for CPU {key.name}: databases in {root / device.name / key.name}", highlight=False)
    with timer_for(device, console, candidate_timeout_s, nnpack="tvm-nnpack" in kinds) as timer:
        return list(_tune_kinds(device, table, kinds, budget, console, root, restart, timer, workloads))


def workloads_of(table: LayerTable, layers: list[str]) -> set[str]:
    """The conv workloads of these layer ids; an id that is not a conv of the table is a UserError."""
    convs = {layer.id: layer for layer in table.convs}
    for layer_id in layers:
        if layer_id not in convs:
            what = "is not a conv layer" if layer_id in table.ids else "is no layer"
            raise UserError(f"--layers: {layer_id!r} {what} of {table.config.name} "
                            f"(its conv layers: {', '.join(convs)})")
    return {convs[layer_id].workload_key() for layer_id in layers}


@contextlib.contextmanager
def timer_for(device: Device, console: Console, candidate_timeout_s: float | None = None,
              nnpack: bool = False) -> Iterator[KernelTimer]:
    """Where candidates are timed: this machine, or the device's boards over TVM's RPC
    (`nnpack`: the hybrid's NNPACK candidates will be among them)."""
    if device.transport == "local":
        yield LOCAL
        return
    from harness.tuning.remote import CANDIDATE_TIMEOUT_S, remote_timer  # noqa: PLC0415

    console.print(f"connecting to {device.name} ...", highlight=False)
    with remote_timer(device, candidate_timeout_s or CANDIDATE_TIMEOUT_S, nnpack) as timer:
        console.print(f"timing candidates on {timer.where}", highlight=False)
        yield timer


def _tune_kinds(device: Device, table: LayerTable, kinds: list[str], budget: Budget, console: Console,
                root: Path, restart: bool, timer: KernelTimer,
                workloads: set[str] | None = None) -> Iterator[TuningDatabase]:
    from harness.builds.tvm_common import target_dict  # noqa: PLC0415

    for kind in kinds:
        db = database_to_extend(device, kind, target_dict(device), root, console)
        tasks = [t for t in task_factory(kind)(table, device, db, root, timer)
                 if workloads is None or t.workload in workloads]
        if restart:
            for task in tasks:
                db.records.pop(task.workload, None)
        with _bars(console) as bars:
            bar = bars.add_task(kind, total=None, layer="")

            def progress(layer: str, done: int, total: int) -> None:
                bars.update(bar, completed=done, total=total, layer=layer)

            finished = run_search(db, tasks, budget, progress, timer.workers)
        yield db
        console.print(summary_table(db, tasks))
        console.print(f"{kind}: database {db.path}", highlight=False)
        if not finished:
            console.print(f"time budget reached during {kind}; run the same command again to "
                          "continue where it stopped", style="yellow")
            return


def database_to_extend(device: Device, kind: str, target: dict[str, Any], root: Path,
                       console: Console) -> TuningDatabase:
    """This CPU's own database of `kind`, new if it has none; one in the old layout made on
    this CPU is carried over into the new place (never a stand-in: it is another CPU's)."""
    used = resolve_database(device, kind, target, root)
    if used.source == OWN:
        return used.db
    own = database_path(device, kind, root)
    if used.source == OLD_LAYOUT:
        console.print(f"{kind}: continuing from {used.db.path} (old per-device layout) into {own}; "
                      "the old file can then be removed", highlight=False)
        return replace(used.db, path=own, sha256=None)
    return TuningDatabase(own, kind, device.name, target)


def _bars(console: Console) -> Progress:
    return Progress(TextColumn("{task.description:<14}", markup=False), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[layer]}", markup=False), TimeElapsedColumn(), console=console)


def summary_table(db: TuningDatabase, tasks: list[Task]) -> Table:
    table = Table(title=f"{db.kind} on {db.device} ({db.path.parent.name})", title_justify="left")
    for col in ("workload (first layer)", "measured", "failed", "best", "median ms", "GFLOP/s"):
        table.add_column(col, justify="right" if col in ("measured", "failed", "median ms", "GFLOP/s") else "left")
    for task in tasks:
        record = db.records.get(task.workload)
        if record is None:
            table.add_row(task.layer.id, f"0/{len(task.space)}", "0", "-", "-", "-")
            continue
        best = record.best()
        failed = sum(1 for c in record.candidates if not c.ok)
        if best is None:
            table.add_row(task.layer.id, f"{len(record.candidates)}/{len(task.space)}", str(failed), "none", "-", "-")
            continue
        median = statistics.median(best.samples_ms)  # type: ignore[arg-type]
        label = ", ".join(f"{k}={v}" for k, v in best.params.items())
        table.add_row(task.layer.id, f"{len(record.candidates)}/{len(task.space)}", str(failed), label,
                      f"{median:.3f}", f"{task.layer.flops / (median * 1e6):.1f}")
    return table

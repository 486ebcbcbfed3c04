"""Run builds on the machine this code is running on and record each one.

This is the on-device runner's body: a local run calls it in-process, a remote run ships the
package and calls it through `python -m harness.runner` on the board. One code path.
A build that fails (missing dependency, compile error, output off the reference) is recorded
as failed with its message; the other builds still run.
"""
from __future__ import annotations

import platform
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.builds import get_build
from harness.builds.base import Build, BuildContext, relative_error
from harness.devices.bandwidth import measure_memory_bandwidth
from harness.devices.config import Device
from harness.devices.state import collect_state
from harness.model.layers import LayerTable
from harness.model.weights import make_input, make_weights
from harness.runner.measure import Settings, measure, steps
from harness.timestamps import utc_now
from harness.runner.deps import missing_message

# progress(build, phase, done, total); phase is "compile", "measure", "ok" or "failed"
Progress = Callable[[str, str, int, int], None]


@dataclass
class RunRequest:
    table: LayerTable
    device: Device
    builds: list[str]
    settings: Settings = field(default_factory=Settings)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per build name
    # Where export()ed artifacts are (one subdirectory per build), on a remote device; None
    # builds in-process with compile().
    artifacts: Path | None = None


def reference_output(table: LayerTable, weights, x: np.ndarray) -> np.ndarray:
    import torch  # noqa: PLC0415 - the reference is PyTorch fp32 with direct convolutions

    from harness.model.unet import UNet  # noqa: PLC0415

    with torch.inference_mode():
        return UNet(table, weights)(torch.from_numpy(x)).numpy()


def _ms(ns: list[int]) -> list[float]:
    return [t / 1e6 for t in ns]


def layer_records(table: LayerTable, layers_ns: dict[str, list[int]], impl: Callable[[str], str],
                  peak: float) -> list[dict[str, Any]]:
    records = []
    for layer in table:
        samples = _ms(layers_ns[layer.id])
        median = float(np.median(samples))
        gflops = layer.flops / (median * 1e6) if median > 0 else 0.0
        records.append({
            "id": layer.id, "op": layer.op, "members": list(layer.members),
            "kernel": list(layer.kernel) if layer.kernel else None,
            "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape),
            "flops": layer.flops, "bytes": layer.bytes,
            "median_ms": median, "samples_ms": samples,
            "gflops": gflops, "pct_peak": 100.0 * gflops / peak,
            "impl": impl(layer.id),
        })
    return records


def failed_record(name: str, message: str, precision: str = "fp32") -> dict[str, Any]:
    return {"name": name, "status": "failed", "message": message, "precision": precision,
            "e2e": None, "layers": []}


def run_build(build: Build, req: RunRequest, weights, x: np.ndarray, ref: np.ndarray,
              progress: Progress) -> dict[str, Any]:
    total = steps(req.settings)
    progress(build.name, "compile", 0, total)
    reason = build.unavailable(req.device)
    if reason:
        return failed_record(build.name, f"unavailable: {reason}", build.precision)
    ctx = BuildContext(req.table, weights, req.device, req.options.get(build.name, {}), req.device.cores)
    exe = build.load(ctx, req.artifacts / build.name) if req.artifacts else build.compile(ctx)
    error = relative_error(exe.run(x), ref)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        progress(build.name, "measure", done, total)

    samples = measure(exe, x, req.settings, on_step=step)
    peak_dtype = build.peak_dtype(req.device)
    e2e = _ms(samples.e2e_ns)
    record = {
        "name": build.name, "status": "ok", "message": None, "precision": build.precision,
        "peak_dtype": peak_dtype, "tolerance": build.tolerance, "max_rel_error": error,
        "e2e": {"median_ms": float(np.median(e2e)), "samples_ms": e2e},
        "layers": layer_records(req.table, samples.layers_ns, exe.impl, req.device.peak_gflops[peak_dtype]),
    }
    notes = getattr(exe, "notes", None)
    if notes:
        record["notes"] = notes
    if error > build.tolerance:
        record["status"] = "failed"
        record["message"] = (f"output differs from the fp32 reference: max relative error {error:.3g} "
                             f"exceeds the tolerance {build.tolerance:.3g}")
    return record


def environment() -> dict[str, Any]:
    env = {"python": platform.python_version(), "numpy": np.__version__, "hostname": platform.node()}
    for module in ("torch", "tvm"):
        mod = sys.modules.get(module)
        if mod is not None:
            env[module] = getattr(mod, "__version__", "unknown")
    return env


def run(req: RunRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Measure every requested build; returns the run's system, environment and builds blocks."""
    progress = progress or (lambda *a: None)
    weights = make_weights(req.table)
    x = make_input(req.table)
    ref = reference_output(req.table, weights, x)
    started = utc_now()
    before = collect_state()
    builds = []
    for name in req.builds:
        try:
            record = run_build(get_build(name), req, weights, x, ref, progress)
        except Exception as exc:  # noqa: BLE001 - recorded as this build's failure, run goes on
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            if isinstance(exc, ModuleNotFoundError) and exc.name:  # say how to install it
                detail = missing_message(exc.name, sys.executable)
            record = failed_record(name, detail)
        progress(name, record["status"], 0, 0)
        builds.append(record)
    return {"started_utc": started,
            "system": {"before": before.to_json(), "after": collect_state().to_json(),
                       "memory_bandwidth": measure_memory_bandwidth(req.device.cores)},  # roofline ceiling
            "environment": environment(),
            "settings": {"warmup": req.settings.warmup, "repeats": req.settings.repeats,
                         "threads": req.device.cores},
            "builds": builds}

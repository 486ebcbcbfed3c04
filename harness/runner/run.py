"""Run builds on the machine this code is running on and record each one.

This is the on-device runner's body: a local run calls it in-process, a remote run ships the
package and calls it through `python -m harness.runner` on the board. One code path.
A build that fails (missing dependency, compile error, output off the reference) is recorded
as failed with its message; the other builds still run.
"""
from __future__ import annotations

import platform
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.builds import NEEDS_TORCH, PROCESS_ENV, get_build
from harness.builds.base import Build, BuildContext, relative_error
from harness.devices.bandwidth import measure_memory_bandwidth
from harness.devices.config import Device
from harness.devices.fma import measure_fma_peak
from harness.devices.state import collect_state
from harness.model.layers import LayerTable
from harness.model.weights import make_input, make_weights
from harness.results.fingerprint import collect_fingerprint, installed_versions
from harness.runner.allocator import describe as describe_allocator, keep_heap
from harness.runner.measure import Settings, measure, steps
from harness.timestamps import utc_now
from harness.runner.deps import has_module, install_hint, missing_message

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
    # The fp32 reference output as .npy (never pickle), computed by the host so that a device
    # needs no PyTorch for the TVM builds; None computes it here with PyTorch.
    reference_file: Path | None = None


def reference_output(table: LayerTable, weights, x: np.ndarray) -> np.ndarray:
    import torch  # noqa: PLC0415 - the reference is PyTorch fp32 with direct convolutions

    from harness.model.tablenet import TableNet  # noqa: PLC0415

    with torch.inference_mode():
        return TableNet(table, weights)(torch.from_numpy(x)).numpy()


def load_reference(req: RunRequest, weights, x: np.ndarray) -> np.ndarray:
    if req.reference_file is not None:
        return np.load(req.reference_file, allow_pickle=False)
    return reference_output(req.table, weights, x)


def save_reference(path: Path, ref: np.ndarray) -> Path:
    with open(path, "wb") as f:
        np.save(f, ref, allow_pickle=False)
    return path


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
    reason = build.unsupported(req.table)
    if reason:
        return failed_record(build.name, f"unsupported: {reason}", build.precision)
    ctx = BuildContext(req.table, weights, req.device, req.options.get(build.name, {}), req.device.cores)
    exe = build.load(ctx, req.artifacts / build.name) if req.artifacts else build.compile(ctx)
    error = relative_error(exe.run(x), ref)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        progress(build.name, "measure", done, total)

    samples = measure(exe, x, req.settings, on_step=step, build=build.name)
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
    tuning = getattr(exe, "tuning", None)
    if tuning:
        record["tuning"] = tuning  # which database per kind; the fingerprint hashes them
    if error > build.tolerance:
        record["status"] = "failed"
        record["message"] = (f"output differs from the fp32 reference: max relative error {error:.3g} "
                             f"exceeds the tolerance {build.tolerance:.3g}")
    return record


def environment(allocator: dict[str, Any]) -> dict[str, Any]:
    return {"python": platform.python_version(), "numpy": np.__version__, "hostname": platform.node(),
            **installed_versions(("torch", "tvm", "onnxruntime")), "allocator": allocator}


TORCH_MISSING = "unavailable: torch is not installed on the device; install it: " + install_hint("torch")


def in_process_record(name: str, req: RunRequest, weights, x: np.ndarray, ref: np.ndarray,
                      progress: Progress) -> dict[str, Any]:
    """Run one build in this process; any exception becomes its failed record."""
    try:
        return run_build(get_build(name), req, weights, x, ref, progress)
    except Exception as exc:  # noqa: BLE001 - recorded as this build's failure, run goes on
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        if isinstance(exc, ModuleNotFoundError) and exc.name:  # say how to install it
            detail = TORCH_MISSING if exc.name.split(".")[0] == "torch" else missing_message(exc.name, sys.executable)
        return failed_record(name, detail)


def isolated_record(name: str, req: RunRequest, request_file: Path, reference_file: Path,
                    progress: Progress) -> dict[str, Any]:
    """Run one build in a child process (harness.runner.isolate) with its own process
    environment (builds.PROCESS_ENV, recorded); its crash is its record."""
    from harness.runner.isolate import run_isolated  # noqa: PLC0415

    if name in NEEDS_TORCH and not has_module("torch"):
        return failed_record(name, TORCH_MISSING)
    env = PROCESS_ENV.get(name, {})
    out = run_isolated(name, request_file, reference_file, req.device.command_timeout_s, name in NEEDS_TORCH,
                       env, req.artifacts is not None, progress)
    record = out if isinstance(out, dict) else failed_record(name, out)
    return {**record, "process_env": dict(env)}


def run_one(req: RunRequest, name: str, reference_file: Path | None, progress: Progress) -> dict[str, Any]:
    """The child process's job: one build's record, in this process."""
    if reference_file is not None:
        req.reference_file = reference_file
    keep_heap()  # as the parent did: the same heap in every build's process
    weights = make_weights(req.table)
    x = make_input(req.table)
    return in_process_record(name, req, weights, x, load_reference(req, weights, x), progress)


def run(req: RunRequest, progress: Progress | None = None, request_file: Path | None = None) -> dict[str, Any]:
    """Measure every requested build; returns the run's system, environment and builds blocks.

    With `request_file` (the JSON this request came from, on a device) each build runs in its
    own process, so one build's crash never takes the others down."""
    progress = progress or (lambda *a: None)
    allocator = keep_heap()  # before anything large is allocated
    weights = make_weights(req.table)
    x = make_input(req.table)
    ref = load_reference(req, weights, x)
    started = utc_now()
    before = collect_state()
    builds = []
    with tempfile.TemporaryDirectory(prefix="harness-ref-") as tmp:
        ref_file = req.reference_file or save_reference(Path(tmp) / "reference.npy", ref)
        for name in req.builds:
            record = (isolated_record(name, req, request_file, ref_file, progress) if request_file
                      else in_process_record(name, req, weights, x, ref, progress))
            progress(name, record["status"], 0, 0)
            builds.append(record)
    after = collect_state()
    return {"started_utc": started,
            # The ceilings are measured after the builds (and after the state they ran in):
            # their load never falls on a build's timings.
            "system": {"before": before.to_json(), "after": after.to_json(),
                       "memory_bandwidth": measure_memory_bandwidth(req.device.cores),  # roofline memory ceiling
                       "fma_peak": measure_fma_peak(req.device.cores).to_json()},  # achievable compute ceiling
            "environment": environment(allocator),
            # after the builds ran, so the versions of the libraries they imported are known
            "fingerprint": collect_fingerprint(req.device, {"allocator": describe_allocator(allocator)}),
            "settings": {"warmup": req.settings.warmup, "repeats": req.settings.repeats,
                         "threads": req.device.cores},
            "builds": builds}

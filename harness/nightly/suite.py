"""What the asv benchmarks in benchmarks/ call: one harness run, then its samples per benchmark.

Which device, model and builds are measured comes from environment variables, because asv
benchmark parameters are fixed when the suite is discovered and asv passes its own
environment through to benchmark processes (`harness nightly` sets them):

    HARNESS_DEVICE        device name from devices.yaml (default: its `default`); it is
                          also the asv machine name
    HARNESS_MODEL         model preset (default: unet)
    HARNESS_BUILDS        comma-separated builds (default: every registered build)
    HARNESS_DEVICES_FILE  devices file (default: devices.yaml at the repository root)
    HARNESS_REPEATS, HARNESS_WARMUP   timed and warm-up passes (default 10 and 2)

The measurement is one `harness run` per build set, made once in asv's setup_cache (so each
build is built and deployed once, not once per layer); it is saved as an ordinary result file
under results/runs/<device>/ (the history `harness regressions` reads) and asv's benchmarks
read their samples back from that JSON file: nothing a device sent is ever unpickled.
"""
from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from harness.builds import build_names, check_build_names
from harness.devices import load_devices
from harness.model import DEFAULT_MODEL, get_model
from harness.results.store import load_result, save_new_result
from harness.runner.measure import Settings
from harness.terminal import make_console


@dataclass(frozen=True)
class SuiteConfig:
    device: str | None
    model: str
    builds: list[str]
    warmup: int
    repeats: int
    devices_file: str | None


def config_from_env(env: dict[str, str] | None = None) -> SuiteConfig:
    env = os.environ if env is None else env
    builds = [b.strip() for b in env.get("HARNESS_BUILDS", "").split(",") if b.strip()]
    return SuiteConfig(device=env.get("HARNESS_DEVICE") or None,
                       model=env.get("HARNESS_MODEL") or DEFAULT_MODEL,
                       builds=check_build_names(builds or build_names()),
                       warmup=int(env.get("HARNESS_WARMUP", "2")),
                       repeats=int(env.get("HARNESS_REPEATS", "10")),
                       devices_file=env.get("HARNESS_DEVICES_FILE") or None)


def layer_ids(config: SuiteConfig) -> list[str]:
    return [layer.id for layer in get_model(config.model)]


def measure_once(config: SuiteConfig) -> str:
    """Run every build on the device; the saved result file's path (asv's setup_cache value)."""
    from harness.session import run_on_device  # noqa: PLC0415 - heavy; only when measuring

    device = load_devices(config.devices_file).get(config.device)
    quiet = make_console(file=io.StringIO(), quiet=True)
    doc = run_on_device(device, get_model(config.model), config.builds,
                        Settings(warmup=config.warmup, repeats=config.repeats), quiet)
    return str(save_new_result(doc))


@functools.lru_cache(maxsize=4)
def _result(result_path: str) -> dict[str, Any]:
    """The result file, read and validated once per process, not once per benchmark call."""
    return load_result(Path(result_path))


def build_record(result_path: str, build: str) -> dict[str, Any]:
    """The build's record; NotImplementedError (asv: skipped, not failed) if it did not run."""
    doc = _result(result_path)
    for record in doc["builds"]:
        if record["name"] == build:
            if record["status"] != "ok":
                raise NotImplementedError(f"{build}: {record['message']}")
            return record
    raise NotImplementedError(f"{build} was not measured")


def layer_record(result_path: str, build: str, layer: str) -> dict[str, Any]:
    for record in build_record(result_path, build)["layers"]:
        if record["id"] == layer:
            return record
    raise NotImplementedError(f"{build} has no layer {layer}")


def seconds(samples_ms: list[float]) -> list[float]:
    return [ms / 1e3 for ms in samples_ms]


def peak_unused_pct(layer: dict[str, Any], peak_gflops: float) -> list[float]:
    """Per sample, the share of the device's peak the layer left unused (100 - % of peak)."""
    return [100.0 - 100.0 * layer["flops"] / (ms * 1e6) / peak_gflops for ms in layer["samples_ms"]]


def ms_per_gflop(layer: dict[str, Any]) -> list[float]:
    """Per sample, milliseconds per GFLOP of the layer's work: 1000 / (GFLOP/s)."""
    return [ms / (layer["flops"] / 1e9) for ms in layer["samples_ms"]]


def peak_of(result_path: str, build: str) -> float:
    doc = _result(result_path)
    return doc["device"]["peak_gflops"][build_record(result_path, build).get("peak_dtype", "fp32")]

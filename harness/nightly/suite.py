"""What the asv benchmarks in benchmarks/ call: one harness run, then its samples per benchmark.

Which device, models and builds are measured comes from environment variables, because asv
benchmark parameters are fixed when the suite is discovered and asv passes its own
environment through to benchmark processes (`harness nightly` sets them):

    HARNESS_DEVICE        device name from devices.yaml (default: its `default`); it is
                          also the asv machine name
    HARNESS_MODELS        comma-separated model presets (default: unet); each is measured
                          and filed on its own (benchmarks/unet.py: the model is a parameter)
    HARNESS_MODEL         the older name, one preset: read only when HARNESS_MODELS is unset
                          (cron lines and CI jobs written before the model list still work)
    HARNESS_BUILDS        comma-separated builds (default: every registered build)
    HARNESS_DEVICES_FILE  devices file (default: devices.yaml at the repository root)
    HARNESS_REPEATS, HARNESS_WARMUP   timed and warm-up passes (default 20 and 2)
    HARNESS_RUNS          independent runs per model (default 3, harness.runs)

The measurement is HARNESS_RUNS independent `harness run` processes per model (harness.runs:
builds in a different order each), made once in asv's setup_cache (so it is not repeated per
layer); each run is saved as an ordinary result file under results/runs/<device>/ (the history
the verdicts judge, run by run, per model) and asv's benchmarks read their samples back from
those JSON files, pooled: nothing a device sent is ever unpickled.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.builds import build_names, check_build_names
from harness.devices import load_devices
from harness.model import DEFAULT_MODEL, get_model, model_names
from harness.results.store import load_result
from harness.runs import (DEFAULT_REPEATS, DEFAULT_RUNS, RunPlan, Side, confirmation_plan, measure_interleaved,
                          measure_runs)

REPO = Path(__file__).resolve().parents[2]  # the checkout asv benchmarks


@dataclass(frozen=True)
class SuiteConfig:
    device: str | None
    models: list[str]
    builds: list[str]
    warmup: int
    repeats: int
    devices_file: str | None
    runs: int = DEFAULT_RUNS


def names(text: str) -> list[str]:
    """The names of a comma list ("a, b," -> [a, b])."""
    return [n.strip() for n in text.split(",") if n.strip()]


def models_from_env(env: Mapping[str, str]) -> list[str]:
    """HARNESS_MODELS; else the older single HARNESS_MODEL; else DEFAULT_MODEL."""
    return model_names(env.get("HARNESS_MODELS") or env.get("HARNESS_MODEL") or DEFAULT_MODEL)


def config_from_env(env: Mapping[str, str] | None = None) -> SuiteConfig:
    env = os.environ if env is None else env
    builds = names(env.get("HARNESS_BUILDS", ""))
    return SuiteConfig(device=env.get("HARNESS_DEVICE") or None,
                       models=models_from_env(env),
                       builds=check_build_names(builds or build_names()),
                       warmup=int(env.get("HARNESS_WARMUP", "2")),
                       repeats=int(env.get("HARNESS_REPEATS", str(DEFAULT_REPEATS))),
                       devices_file=env.get("HARNESS_DEVICES_FILE") or None,
                       runs=int(env.get("HARNESS_RUNS", str(DEFAULT_RUNS))))


def layer_ids(config: SuiteConfig) -> list[str]:
    """Every model's layer ids, in table order: the first model's, then each next model's new
    ones (asv's layer parameter is one list for all models; a model without a layer skips it)."""
    return list(dict.fromkeys(layer.id for model in config.models for layer in get_model(model)))


def model_plan(config: SuiteConfig, model: str) -> RunPlan:
    device = load_devices(config.devices_file).get(config.device)
    return RunPlan(device.name, model, config.builds, config.warmup, config.repeats,
                   config.runs, Path(config.devices_file) if config.devices_file else None)


def measure_model(config: SuiteConfig, model: str) -> list[str]:
    """The independent runs of every build of `model` on the device; their result files."""
    return [str(p) for p in measure_runs(model_plan(config, model), REPO)]


def measure_model_against(config: SuiteConfig, model: str, base: Path, suspects: Sequence[tuple[str, str]],
                          runs: int) -> tuple[list[str], list[str]]:
    """`runs` runs of `model`'s builds that have a suspect series, this checkout's interleaved
    with those of the checkout `base` (the nightly's A/B confirmation: only the model and the
    builds it doubts, harness.runs.confirmation_plan); (base's files, this one's)."""
    plan = confirmation_plan(model_plan(config, model), suspects, runs)
    base_files, head_files = measure_interleaved(plan, [Side(base), Side(REPO)])
    return [str(p) for p in base_files], [str(p) for p in head_files]


def measure_once(config: SuiteConfig) -> dict[str, list[str]]:
    """Every model's runs, model by model: {model: its result files} (asv's setup_cache value)."""
    return {model: measure_model(config, model) for model in config.models}


@functools.lru_cache(maxsize=16)
def _result(result_path: str) -> dict[str, Any]:
    """The result file, read and validated once per process, not once per benchmark call."""
    return load_result(Path(result_path))


def build_records(result: list[str] | str, build: str) -> list[dict[str, Any]]:
    """The build's record in every run; NotImplementedError (asv: skipped, not failed) if it
    did not run successfully in all of them."""
    records = []
    for path in [result] if isinstance(result, str) else result:
        found = [r for r in _result(path)["builds"] if r["name"] == build]
        if not found:
            raise NotImplementedError(f"{build} was not measured")
        if found[0]["status"] != "ok":
            raise NotImplementedError(f"{build}: {found[0]['message']}")
        records.append(found[0])
    return records


def e2e_samples(result: list[str] | str, build: str) -> list[float]:
    return [s for r in build_records(result, build) for s in r["e2e"]["samples_ms"]]


def layer_records(result: list[str] | str, build: str, layer: str) -> list[dict[str, Any]]:
    found = [rec for r in build_records(result, build) for rec in r["layers"] if rec["id"] == layer]
    if not found:
        raise NotImplementedError(f"{build} has no layer {layer}")
    return found


def layer_samples(result: list[str] | str, build: str, layer: str) -> list[float]:
    """Every run's raw samples of the layer, pooled (asv's statistics are per benchmark)."""
    return [s for rec in layer_records(result, build, layer) for s in rec["samples_ms"]]


def seconds(samples_ms: list[float]) -> list[float]:
    return [ms / 1e3 for ms in samples_ms]


def ms_per_gflop(layer: dict[str, Any], samples_ms: list[float]) -> list[float]:
    """Per sample, milliseconds per GFLOP of the layer's work: 1000 / (GFLOP/s)."""
    return [ms / (layer["flops"] / 1e9) for ms in samples_ms]

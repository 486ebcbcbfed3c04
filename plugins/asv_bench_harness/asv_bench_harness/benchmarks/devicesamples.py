"""Benchmark types for numbers measured elsewhere (on a device), returned with raw samples.

asv's own `time_` benchmarks time a Python call in the benchmark process; the harness's times
are measured by its runner on the device, layer by layer. These types take the device's raw
samples as they are and hand them to asv as timing samples ({"samples", "number": 1}), so
asv computes its median, confidence interval and `asv compare`'s Mann-Whitney test from them.

- `devicetime_*` / `DeviceTime*`: returns samples in seconds; asv type "time".
- `devicesamples_*` / `DeviceSamples*`: returns samples of any lower-is-better quantity; the
  benchmark's `unit` attribute names it; asv type "track".

Registered the way asv_runner discovers plugins: a distribution named asv_bench_*, whose
benchmarks subpackage's modules list their classes in `export_as_benchmark`.
"""
from __future__ import annotations

import math
import re

from asv_runner.benchmarks._base import Benchmark, _get_first_attr


class DeviceSamplesBenchmark(Benchmark):
    name_regex = re.compile("^(DeviceSamples[A-Z_].+)|(devicesamples_.+)$")
    default_type, default_unit = "track", "unit"

    def __init__(self, name, func, attr_sources):
        Benchmark.__init__(self, name, func, attr_sources)
        self.type = _get_first_attr(attr_sources, "type", self.default_type)
        self.unit = _get_first_attr(attr_sources, "unit", self.default_unit)

    def run(self, *param):
        samples = [float(s) for s in self.func(*param)]
        if not samples or not all(math.isfinite(s) for s in samples):
            raise ValueError(f"{self.name}: expected finite samples, got {samples!r}")
        return {"samples": samples, "number": 1}


class DeviceTimeBenchmark(DeviceSamplesBenchmark):
    name_regex = re.compile("^(DeviceTime[A-Z_].+)|(devicetime_.+)$")
    default_type, default_unit = "time", "seconds"

    def __init__(self, name, func, attr_sources):
        DeviceSamplesBenchmark.__init__(self, name, func, attr_sources)
        self.type, self.unit = "time", "seconds"  # asv formats and compares these as times


export_as_benchmark = [DeviceTimeBenchmark, DeviceSamplesBenchmark]

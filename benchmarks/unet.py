"""asv benchmarks of the UNet harness: end-to-end and per-layer device times, per build.

Device, model and builds come from environment variables (HARNESS_DEVICE, HARNESS_MODEL,
HARNESS_BUILDS, ...; see harness/nightly/suite.py). The benchmark types devicetime_ and
devicesamples_ are the asv_runner plugin in plugins/asv_bench_harness: they hand the device's
raw samples to asv, so asv's statistics and `asv compare`'s significance test apply.

asv treats every number as lower-is-better. GFLOP/s is higher-is-better, so it is not tracked
as such: a halving GFLOP/s would show as an improvement. The display-only class below tracks
its lower-is-better transform instead, ms per GFLOP (1000 / GFLOP/s), per sample, so a slower
layer always moves it up, like its time. "% of peak unused" (100 - % of peak) was dropped: a
layer at p % of peak that halves its speed moves it from 100 - p to 100 - p/2, a factor below
asv's 1.1 whenever p < 9 %, so asv could never flag it.

Every sample of every run (HARNESS_RUNS independent runs) is pooled into asv's benchmark; the
run-by-run verdict is `harness nightly`'s own (harness.history.verdict).
"""
import sys
from pathlib import Path

# Measure the checkout asv is benchmarking, whatever copy of the harness is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.nightly import suite  # noqa: E402

CONFIG = suite.config_from_env()
LAYERS = suite.layer_ids(CONFIG)


def measure_all_builds(_self=None):  # shared by the classes below, so called as a method
    """One harness run of every build (built and deployed once each); its result file."""
    return suite.measure_once(CONFIG)


class EndToEnd:
    """Whole-network inference time per build (plain passes, no per-layer instrumentation)."""

    params = [CONFIG.builds]
    param_names = ["build"]
    setup_cache = measure_all_builds
    timeout = 3600  # setup_cache builds (and for TVM compiles) every build

    def setup(self, result, build):
        suite.build_records(result, build)

    def devicetime_e2e(self, result, build):
        return suite.seconds(suite.e2e_samples(result, build))


class _PerLayer:
    """Parameters shared by the per-layer benchmarks: build x layer id, one measurement."""

    params = [CONFIG.builds, LAYERS]
    param_names = ["build", "layer"]
    setup_cache = measure_all_builds
    timeout = 3600


class Layer(_PerLayer):
    """Per-layer time per build, ids as in the harness's layer table (enc1.conv2, dec0.up...)."""

    def setup(self, result, build, layer):
        suite.layer_records(result, build, layer)

    def devicetime_layer(self, result, build, layer):
        return suite.seconds(suite.layer_samples(result, build, layer))


class LayerEfficiency(_PerLayer):
    """Display only: the lower-is-better form of GFLOP/s (see the module docstring)."""

    def setup(self, result, build, layer):
        if not suite.layer_records(result, build, layer)[0]["flops"]:
            raise NotImplementedError(f"{layer} does no arithmetic")  # asv: skipped

    def devicesamples_ms_per_gflop(self, result, build, layer):
        layer_record = suite.layer_records(result, build, layer)[0]
        return suite.ms_per_gflop(layer_record, suite.layer_samples(result, build, layer))

    devicesamples_ms_per_gflop.unit = "ms per GFLOP (1000 / GFLOP/s)"

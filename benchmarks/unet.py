"""asv benchmarks of the harness: end-to-end and per-layer device times, per model and build.

Device, models and builds come from environment variables (HARNESS_DEVICE, HARNESS_MODELS,
HARNESS_BUILDS, ...; see harness/nightly/suite.py). The benchmark types devicetime_ and
devicesamples_ are the asv_runner plugin in plugins/asv_bench_harness: they hand the device's
raw samples to asv, so asv's statistics and `asv compare`'s significance test apply.

The model is every benchmark's first parameter. asv files a result under the benchmark's name
and parameters, never under the environment that chose what was measured: while the model was
an environment variable alone, nightlies of unet and of unet-tiny on one machine filed their
times under the same names (`Layer.devicetime_layer('torch', 'enc1.conv2')`): the second on a
commit replaced the first's results, and across commits the two networks made one series that
`asv compare` judged one against the other. With the model a parameter, each network keeps its
own series. The per-layer classes take the union of the models' layer ids (the first model's,
then each next model's new ones); a model without a layer skips that combination (setup raises
NotImplementedError, which asv records as skipped). The module, class and method names did not
change, but the parameters and the code did: asv results stored before this layout (build,
layer) do not line up with those stored since (model, build, layer). asv does not join them:
its graphs leave out results of older benchmark code, and `asv compare` across the change
lists the old and the new names apart, each n/a on the other side. The harness's own history
(results/runs/, what `harness nightly` judges) was always per model and is not affected.

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
# asv's setup_cache has its benchmarks' timeout; it measures every build of every model
TIMEOUT_S = 3600 * len(CONFIG.models)


def measure_all_builds(_self=None):  # shared by the classes below, so called as a method
    """The runs of every build of every model, once: {model: its result files}."""
    return suite.measure_once(CONFIG)


class EndToEnd:
    """Whole-network inference time per model and build (plain passes, no per-layer
    instrumentation)."""

    params = [CONFIG.models, CONFIG.builds]
    param_names = ["model", "build"]
    setup_cache = measure_all_builds
    timeout = TIMEOUT_S  # setup_cache builds (and for TVM compiles) every build

    def setup(self, result, model, build):
        suite.build_records(result[model], build)

    def devicetime_e2e(self, result, model, build):
        return suite.seconds(suite.e2e_samples(result[model], build))


class _PerLayer:
    """Parameters shared by the per-layer benchmarks: model x build x layer id, one
    measurement."""

    params = [CONFIG.models, CONFIG.builds, LAYERS]
    param_names = ["model", "build", "layer"]
    setup_cache = measure_all_builds
    timeout = TIMEOUT_S


class Layer(_PerLayer):
    """Per-layer time per build, ids as in the harness's layer table (enc1.conv2, dec0.up...)."""

    def setup(self, result, model, build, layer):
        suite.layer_records(result[model], build, layer)  # NotImplementedError: not this model's

    def devicetime_layer(self, result, model, build, layer):
        return suite.seconds(suite.layer_samples(result[model], build, layer))


class LayerEfficiency(_PerLayer):
    """Display only: the lower-is-better form of GFLOP/s (see the module docstring)."""

    def setup(self, result, model, build, layer):
        if not suite.layer_records(result[model], build, layer)[0]["flops"]:
            raise NotImplementedError(f"{layer} does no arithmetic")  # asv: skipped

    def devicesamples_ms_per_gflop(self, result, model, build, layer):
        layer_record = suite.layer_records(result[model], build, layer)[0]
        return suite.ms_per_gflop(layer_record, suite.layer_samples(result[model], build, layer))

    devicesamples_ms_per_gflop.unit = "ms per GFLOP (1000 / GFLOP/s)"

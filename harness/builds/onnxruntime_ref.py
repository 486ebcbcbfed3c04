"""`onnxruntime`: the network exported to ONNX and run by ONNX Runtime's CPU execution provider.

A reference, like `torch`: what a user of these boards would otherwise try, ONNX Runtime with
its MLAS kernels (NEON on ARM, AVX2/AVX-512 on x86), out of the box:
- export (host, PyTorch): harness.builds.onnx_export writes TableNet with the seeded weights
  as model.onnx, every node named `/<layer id with __ for dots>/<Op>`. That file is all a
  device needs: load() there imports only onnxruntime and numpy, no PyTorch.
- sessions: the CPU execution provider, intra_op_num_threads = the device's cores, ORT's
  default graph optimizations (ORT_ENABLE_ALL): constant folding, Conv+activation fusion
  (FusedConv), Conv+Add(+Relu) fusion into one kernel and, on x86 only, the NCHWc layout
  (ARM runs MLAS's NEON kernels in the plain layout).
  Nothing is tuned or turned off: the numbers are what a user gets.
- per-layer times come from ORT's profiler, each profiled node charged to the layer its name
  carries (see `charge_layers` for the nodes ORT makes itself and the layers it fuses away).

How the profiler's times differ from the runner's clock: ORT times each node's kernel
(OpKernel::Compute) with std::chrono::high_resolution_clock, on Linux the same monotonic
clock as the runner's perf_counter_ns, but writes whole microseconds: a node under 1 us reads
0 and every reading is up to 1 us short. It times kernels only: the executor's work between
them (arena allocations, releasing inputs), binding the numpy input and copying the output out
belong to no node and count only in the end-to-end time, as the VM's builtins do for the TVM
builds. And each reading includes the profiler's own bookkeeping for its node (its tensors'
sizes and shapes as strings, about 1 us a node on the x86 host). So the layers sum to less
than the end-to-end time where kernels are large and to about as much, or more, where a
network is many tiny kernels: on the shared 2-core x86 host, 70-111% for unet-tiny, about 80%
for resnet18-small, 100-130% for shufflenet-v2-small (173 nodes of 3-10 us). The result's
notes say how the layers summed against the end-to-end median; a profile whose kernels add up
to more than the wall time of their own run is refused (its events would not be that run's).

Why a fresh session per profiled pass: in ONNX Runtime 1.32's Python API profiling is a
session option (its C API's run-level profiling is not exposed), and a session's profile can
only be read by ending it, which ends its profiling for good. So run_timed makes a profiling
session from the same model bytes, runs it once to warm it (arena grown, weights prepacked,
thread pool up, caches as warm as the plain session's), times the next run, ends profiling
and reads that run's events from the JSON file. `run` uses a long-lived session without
profiling, so end-to-end samples pay no profiling overhead; the profiling session is gone
before the next one is timed, so its thread pool never spins beside it.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.builds.base import Build, BuildContext, absorber_label, fused_into_label, fused_note
from harness.devices.config import Device
from harness.model.layers import Layer, LayerTable, scope_key
from harness.runner.deps import ONNXRUNTIME_ARMV7, install_hint
from harness.runner.measure import Clock

MODEL_FILE = "model.onnx"
INPUT_NAME = "input"  # harness.builds.onnx_export's (no torch here); the one output is read by position
KERNEL_SUFFIX = "_kernel_time"  # a node's kernel event in ORT's profile: "<node name>_kernel_time"
# Op types whose CPU kernels are MLAS's (convolutions and GEMMs): their impl says so.
MLAS_OPS = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul"})
NCHWC_SUFFIX = "_nchwc"
ORT_ERRORS_ONLY = 3  # log_severity_level: ORT's per-session warnings would repeat on every profiled pass


def onnxruntime_unavailable(device: Device) -> str | None:
    """None if ONNX Runtime imports here, else why not and what to do."""
    try:
        import onnxruntime  # noqa: F401, PLC0415 - only whether it imports
    except ImportError as exc:
        if device.arch.startswith("armv7"):
            return f"ONNX Runtime is not installed: it has {ONNXRUNTIME_ARMV7}"
        return f"ONNX Runtime is not installed ({exc}); {install_hint('onnxruntime')}"
    return None


def layer_keys(table: LayerTable) -> dict[str, str]:
    """The exporter's scope name of each layer -> layer id. Two ids with one name would make
    the times ambiguous."""
    keys: dict[str, str] = {}
    for layer_id in table.ids:
        key = scope_key(layer_id)
        if key in keys:
            raise ValueError(f"layers {keys[key]!r} and {layer_id!r} have the same ONNX scope name {key!r}")
        keys[key] = layer_id
    return keys


@dataclass(frozen=True)
class NodeTime:
    """One kernel run of one ORT node in a profiled pass."""
    node: str  # ORT's node name: the exporter's, or ORT's own for a node it made or fused
    op: str  # its op type, e.g. Conv, FusedConv, ReorderInput
    inputs: int  # how many inputs it read (a conv with an Add fused in reads a fourth, the sum)
    us: int  # kernel duration, whole microseconds

    @property
    def label(self) -> str:
        """The op, with MLAS for its convolution and GEMM kernels and NCHWc for ORT's blocked
        layout on x86 (whose nodes it names `<output>_nchwc`)."""
        kernel = ["MLAS"] if self.op in MLAS_OPS else []
        kernel += ["NCHWc"] if self.node.endswith(NCHWC_SUFFIX) else []
        return f"{self.op}({' '.join(kernel)})" if kernel else self.op


def read_profile(path: str) -> list[dict[str, Any]]:
    """ORT's profile (a Chrome trace: a JSON list of events); the file is removed."""
    file = Path(path)
    try:
        events = json.loads(file.read_text())
    finally:
        file.unlink(missing_ok=True)
    if not isinstance(events, list):
        raise RuntimeError(f"ONNX Runtime's profile {file.name} is not a list of events")
    return events


def last_run_nodes(events: list[dict[str, Any]]) -> list[NodeTime]:
    """The node kernels of the profile's last run (ORT's last `model_run` event), in execution order."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        raise RuntimeError("ONNX Runtime's profile has no model_run event")
    start, end = runs[-1]["ts"], runs[-1]["ts"] + runs[-1]["dur"]
    kernels = sorted((e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(KERNEL_SUFFIX)
                      and start <= e["ts"] <= end), key=lambda e: e["ts"])
    return [NodeTime(e["name"].removesuffix(KERNEL_SUFFIX), str(e["args"].get("op_name", "?")),
                     len(e["args"].get("input_type_shape", [])), int(e["dur"])) for e in kernels]


def named_layer(node: str, keys: dict[str, str]) -> str | None:
    """The layer whose scope names the node: a `/`-separated part of the name that is a
    layer's key, e.g. `/enc0__conv1/Conv`, or the names ORT gives nodes it makes from one
    (`/enc0__conv1/Relu_output_0_nchwc`, `/stage2__1__chunk2/Slice/GatherSliceToSplitFusion`)."""
    return next((keys[part] for part in node.split("/") if part in keys), None)


@dataclass
class LayerCharge:
    """What one layer was charged in a pass: its kernels and the layers fused into them."""
    kernels: list[str] = field(default_factory=list)  # labels of its own nodes, in order
    inserted: list[str] = field(default_factory=list)  # labels of nodes ORT inserted for it (layout reorders)
    us: int = 0
    widest: int = 0  # most inputs any of its own kernels read
    absorbed: list[str] = field(default_factory=list)  # ids of layers ORT fused into its kernels
    fused_into: str | None = None  # this layer has no kernel: ORT fused it into that layer's


def charge_nodes(nodes: list[NodeTime], keys: dict[str, str]) -> dict[str, LayerCharge]:
    """Each node's time to a layer. A node named for a layer is that layer's. A node ORT made
    itself with no layer in its name (NCHWc's ReorderInput/ReorderOutput on x86) converts a
    tensor for the layer that runs next, so it is charged to the next named node's layer; one
    after the last named node, to the last."""
    named = [named_layer(n.node, keys) for n in nodes]
    charges: dict[str, LayerCharge] = {}
    for i, node in enumerate(nodes):
        owner = named[i] or next((lid for lid in named[i + 1:] if lid), None) \
            or next((lid for lid in reversed(named[:i]) if lid), None)
        if owner is None:
            raise RuntimeError(f"no ONNX Runtime node names a layer (first: {node.node!r}): was the model "
                               "exported by harness.builds.onnx_export?")
        charge = charges.setdefault(owner, LayerCharge())
        charge.us += node.us
        if named[i]:
            charge.kernels.append(node.label)
            charge.widest = max(charge.widest, node.inputs)
        else:
            charge.inserted.append(node.label)
    return charges


def absorber(layer: Layer, table: LayerTable, charges: dict[str, LayerCharge]) -> str | None:
    """The layer whose kernel ORT fused this kernel-less layer into, by the two fusions that can
    take a whole layer of these networks: identical ops reading the same tensor merge into one
    (two channel slices into one Split: a sibling), and a node folds into its producer when it is
    that producer's only consumer (Conv + Add + Relu into one FusedConv, which then reads the
    sum as a fourth input: the widest of the candidates). None if neither explains it."""
    siblings = [other.id for other in table if other.id != layer.id and other.op == layer.op
                and other.inputs == layer.inputs and charges.get(other.id, LayerCharge()).kernels]
    if siblings:
        return siblings[0]
    readers = {src: [other.id for other in table if src in other.inputs] for src in layer.inputs}
    producers = [src for src in layer.inputs if readers[src] == [layer.id]
                 and charges.get(src, LayerCharge()).kernels]
    return max(producers, key=lambda src: charges[src].widest, default=None)


def charge_layers(table: LayerTable, nodes: list[NodeTime], keys: dict[str, str]) -> dict[str, LayerCharge]:
    """Every layer's charge. A layer with no node of its own ran inside another layer's kernel
    (see absorber): it is charged 0 and says where it went, and that layer says it took it in."""
    charges = charge_nodes(nodes, keys)
    for layer in table:
        if layer.id in charges:
            continue
        charge = charges[layer.id] = LayerCharge()
        charge.fused_into = absorber(layer, table, charges)
        if charge.fused_into is not None:
            charges[charge.fused_into].absorbed.append(layer.id)
    return charges


def impl_label(charge: LayerCharge, charges: dict[str, LayerCharge]) -> str:
    """What ran the layer, from ORT's nodes: `ort:FusedConv(MLAS)`, `ort:Conv(MLAS NCHWc)`,
    `ort:Resize+Add+Relu`, `ort:MaxPool+ReorderInput` (a layout reorder charged to it),
    `ort:FusedConv(MLAS) (+layer1.0.add fused in)`, `ort:fused into layer1.0.conv2's FusedConv(MLAS)`."""
    if charge.fused_into is not None:
        return fused_into_label("ort", charge.fused_into, "+".join(charges[charge.fused_into].kernels))
    if not charge.kernels and not charge.inserted:
        return "ort:no kernel of its own (fused or removed by ONNX Runtime's graph optimizations)"
    return absorber_label("ort:" + "+".join(charge.kernels + charge.inserted), charge.absorbed)


def session_options(threads: int, profile_prefix: str | None = None) -> Any:  # onnxruntime.SessionOptions
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # ORT's default, stated
    so.log_severity_level = ORT_ERRORS_ONLY
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def make_session(model: bytes, threads: int, profile_prefix: str | None = None) -> Any:  # InferenceSession
    import onnxruntime as ort  # noqa: PLC0415

    return ort.InferenceSession(model, sess_options=session_options(threads, profile_prefix),
                                providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class ProfiledPass:
    out: np.ndarray
    nodes: list[NodeTime]
    kernel_ns: int  # the sum of its kernels' times


class ORTExecutable:
    def __init__(self, model: bytes, table: LayerTable, threads: int):
        self.model, self.table, self.threads = model, table, threads
        self.keys = layer_keys(table)
        self.session = make_session(model, threads)
        self.profiles = tempfile.TemporaryDirectory(prefix="harness-ort-profile-")
        # per pass, for the notes: plain runs' times and profiled passes' kernel sums (ns)
        self.run_ns: list[int] = []
        self.kernel_ns: list[int] = []
        # One profiled pass now: a model whose nodes do not map to layers fails here, before
        # measuring, and impl() knows what ran each layer.
        first = self.profiled_pass(np.zeros(table.config.input_shape, np.float32), time.perf_counter_ns)
        self.charges = charge_layers(table, first.nodes, self.keys)

    def run(self, x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter_ns()  # two clock reads (~0.1 us) for the notes' kernel share
        out = self.session.run(None, {INPUT_NAME: x})[0]
        self.run_ns.append(time.perf_counter_ns() - t0)
        return out

    def profiled_pass(self, x: np.ndarray, clock: Clock) -> ProfiledPass:
        """One run of a fresh, warmed profiling session (see the module's docstring)."""
        session = make_session(self.model, self.threads, str(Path(self.profiles.name) / "ort"))
        session.run(None, {INPUT_NAME: x})  # warm-up, profiled too: only the last run is read
        t0 = clock()
        out = session.run(None, {INPUT_NAME: x})[0]
        wall_ns = clock() - t0
        nodes = last_run_nodes(read_profile(session.end_profiling()))
        kernel_ns = 1000 * sum(n.us for n in nodes)
        if kernel_ns > wall_ns:
            raise RuntimeError(f"ONNX Runtime's profile gives {kernel_ns} ns of kernels in a run that took "
                               f"{wall_ns} ns: the profile's events are not this run's")
        return ProfiledPass(out, nodes, kernel_ns)

    def run_timed(self, x: np.ndarray, clock: Clock) -> tuple[np.ndarray, dict[str, int]]:
        done = self.profiled_pass(x, clock)
        self.kernel_ns.append(done.kernel_ns)
        charges = charge_layers(self.table, done.nodes, self.keys)
        return done.out, {layer_id: 1000 * charges[layer_id].us for layer_id in self.table.ids}

    def impl(self, layer_id: str) -> str:
        return impl_label(self.charges[layer_id], self.charges)

    @property
    def notes(self) -> list[str]:
        """Read by the runner after measuring."""
        notes = ["per-layer times are ONNX Runtime's profiler's kernel times: whole microseconds, each with the "
                 "profiler's own bookkeeping for its node; the executor's work between kernels and the input and "
                 "output copies are in no layer"]
        if self.run_ns and self.kernel_ns:
            share = float(np.median(self.kernel_ns)) / float(np.median(self.run_ns))
            notes.append(f"the layers summed to {100 * share:.0f}% of the end-to-end time (medians)")
        fused = fused_note("ONNX Runtime", {lid: c.fused_into for lid, c in self.charges.items() if c.fused_into},
                           shown=4)
        return notes + [fused] if fused else notes


class ONNXRuntimeBuild(Build):
    name = "onnxruntime"
    description = "the network exported to ONNX, run by ONNX Runtime's CPU execution provider (MLAS kernels)"
    # max|y - ref| / max|ref| against PyTorch's fp32 reference: MLAS sums in another order
    # (blocked GEMMs, NCHWc on x86, the residual added inside the conv). Measured on the x86
    # host (AVX2, NCHWc): unet 2.8e-6, unet-tiny 1.1e-6, resnet18 3.7e-7 (-small 5.5e-7),
    # mobilenet-v2 1.6e-6 (-small 2.4e-6), squeezenet1.1 1.4e-7 (-small 4.4e-7),
    # shufflenet-v2 5.4e-7 (-small 5.6e-7); on an emulated Cortex-A76 (MLAS's NEON kernels,
    # plain layout, FusedConv) unet-tiny 9.0e-7, resnet18-small 6.3e-7, mobilenet-v2-small
    # 2.6e-6, squeezenet1.1-small 4.9e-7, shufflenet-v2-small 5.0e-7. fp32 rounding, no
    # algorithm of lower precision.
    # 1e-4, the TVM builds' tolerance, is 35x the worst and still fails a wrong layer: one
    # conv's bias dropped moved these outputs by 2e-3 (resnet18-small's layer4) to 0.17.
    tolerance = 1e-4

    def unavailable(self, device: Device) -> str | None:
        return onnxruntime_unavailable(device)

    def compile(self, ctx: BuildContext) -> ORTExecutable:
        with tempfile.TemporaryDirectory(prefix="harness-onnx-") as tmp:
            self.export(ctx, Path(tmp))
            return self.load(ctx, Path(tmp))

    def export(self, ctx: BuildContext, out_dir: Path) -> list[Path]:
        from harness.builds.onnx_export import export_onnx  # noqa: PLC0415 - PyTorch, on the host only

        return [export_onnx(ctx.table, ctx.weights, out_dir / MODEL_FILE)]

    def load(self, ctx: BuildContext, artifact_dir: Path) -> ORTExecutable:
        path = artifact_dir / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {MODEL_FILE} in {artifact_dir}: the host exported nothing for this build")
        return ORTExecutable(path.read_bytes(), ctx.table, ctx.threads)

"""Search tasks: what to measure for each distinct conv workload of a model, on this machine.

Every candidate's output is checked against PyTorch's fp32 convolution before its time
counts: a kernel that is fast and wrong (NNPACK's `direct` reports success on 1x1 without
writing its output, for one) must never win.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Protocol

import numpy as np

from harness.devices.config import Device
from harness.model.layers import Layer, LayerTable
from harness.tuning.search import Task

REPEATS = 5
MIN_REPEAT_MS = 20  # each sample runs the kernel often enough to last this long


def unique_conv_layers(table: LayerTable) -> list[Layer]:
    """One layer per distinct conv workload, in table order."""
    seen: dict[str, Layer] = {}
    for layer in table.convs:
        seen.setdefault(layer.workload_key(), layer)
    return list(seen.values())


def conv_data(layer: Layer, seed: int = 0) -> dict[str, np.ndarray]:
    """A random input and He-scaled weights for one conv layer, with PyTorch's output."""
    rng = np.random.default_rng(seed)
    shape = layer.weight_shape
    assert shape is not None
    x = rng.standard_normal(layer.in_shape).astype(np.float32)
    wt = (rng.standard_normal(shape) * np.sqrt(2.0 / math.prod(shape[1:]))).astype(np.float32)
    b = rng.uniform(-0.1, 0.1, layer.out_channels).astype(np.float32)
    return {"x": x, "w": wt, "b": b, "ref": conv_reference(layer, x, wt, b)}


def conv_reference(layer: Layer, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The layer's function in PyTorch (the fp32 reference's own code) on these numbers."""
    import torch  # noqa: PLC0415

    from harness.model.tablenet import conv_fn  # noqa: PLC0415

    with torch.inference_mode():
        return conv_fn(layer, torch.from_numpy(w), torch.from_numpy(b))(torch.from_numpy(x)).numpy()


def check_output(out: np.ndarray, ref: np.ndarray, tolerance: float) -> None:
    error = float(np.max(np.abs(out.astype(np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))
    if not error <= tolerance:  # also catches NaN
        raise ValueError(f"wrong output: max relative error {error:.3g} > {tolerance:.0e}")


class KernelTimer(Protocol):
    """Where candidates are timed: this machine (LocalTimer) or boards over TVM's RPC
    (harness.tuning.remote.RemoteTimer). `workers` candidates may be measured at once."""
    workers: int

    def tvm_kernel(self, func, target, data: dict[str, np.ndarray], dtype: str, tolerance: float) -> list[float]:
        ...

    def nnpack_conv(self, spec: dict[str, Any], data: dict[str, np.ndarray], tolerance: float) -> list[float]:
        ...


class LocalTimer:
    workers = 1

    def tvm_kernel(self, func, target, data: dict[str, np.ndarray], dtype: str, tolerance: float) -> list[float]:
        return time_tvm_kernel(func, target, data, dtype, tolerance)

    def nnpack_conv(self, spec: dict[str, Any], data: dict[str, np.ndarray], tolerance: float) -> list[float]:
        from harness.builds.tvm_nnpack import time_nnpack_conv  # noqa: PLC0415 - needs libtorch_cpu

        out = np.zeros_like(data["ref"])
        samples = time_nnpack_conv(spec, data["x"], data["w"], data["b"], out)
        check_output(out, data["ref"], tolerance)
        return samples


LOCAL = LocalTimer()


def kernel_args(data: dict[str, np.ndarray], dtype: str, dev) -> list:
    """The kernel's (x, w, bias, out) as TVM tensors on `dev` (this machine's or a board's)."""
    import tvm  # noqa: PLC0415

    np_dtype = np.float16 if dtype == "float16" else np.float32
    return [tvm.runtime.tensor(a.astype(np_dtype), dev) for a in
            (data["x"], data["w"], data["b"].reshape(1, -1, 1, 1), np.zeros_like(data["ref"]))]


def verify_and_time(kernel, dev, args: list, ref: np.ndarray, tolerance: float) -> list[float]:
    """Run once and check the output, then time_evaluator's samples in ms (works the same on a
    local module and on an RPC session's remote one)."""
    kernel["main"](*args)
    check_output(args[-1].numpy(), ref, tolerance)
    timer = kernel.time_evaluator("main", dev, number=1, repeat=REPEATS, min_repeat_ms=MIN_REPEAT_MS)
    return [t * 1e3 for t in timer(*args).results]


def compile_kernel(func, target):
    """One layer's PrimFunc compiled for this machine: the module verify_and_time runs."""
    import tvm  # noqa: PLC0415

    return tvm.compile(tvm.IRModule({"main": func}), target=target).mod


def time_tvm_kernel(func, target, data: dict[str, np.ndarray], dtype: str, tolerance: float) -> list[float]:
    """Compile one layer's PrimFunc, verify it, return per-repeat times in ms."""
    return time_compiled(compile_kernel(func, target), data, dtype, tolerance)


def time_compiled(kernel, data: dict[str, np.ndarray], dtype: str, tolerance: float) -> list[float]:
    """A compiled kernel (compile_kernel) verified and timed here, per-repeat times in ms."""
    import tvm  # noqa: PLC0415

    dev = tvm.cpu()
    return verify_and_time(kernel, dev, kernel_args(data, dtype, dev), data["ref"], tolerance)


def time_callable(fn: Callable[[], Any], repeats: int = REPEATS, min_repeat_ms: float = MIN_REPEAT_MS) -> list[float]:
    """time_evaluator's protocol for a Python callable: calibrate `number`, then repeat."""
    import time  # noqa: PLC0415

    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6)
    number = max(1, int(np.ceil(min_repeat_ms / 1e3 / once)))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number * 1e3)
    return samples


def tvm_conv_tasks(table: LayerTable, device: Device, target, simd: int, timer: KernelTimer = LOCAL) -> list[Task]:
    """Per conv workload, the `tvm` build's template tiles: the direct template's for ordinary
    convs (any kernel and stride), the grouped template's for grouped and depthwise ones."""
    from harness.builds.tvm_common import layer_primfunc, registers, schedule_primfunc  # noqa: PLC0415
    from harness.builds.tvm_pure import schedule_any_conv  # noqa: PLC0415
    from harness.tuning import conv_grouped  # noqa: PLC0415
    from harness.tuning.conv_direct import ConvParams, search_space  # noqa: PLC0415

    tasks = []
    for layer in unique_conv_layers(table):
        func = layer_primfunc(layer, "float32", target)
        data = conv_data(layer)
        grouped = layer.groups > 1
        space = (conv_grouped.search_space(layer, simd) if grouped
                 else ranked(search_space(layer, simd, registers(device)), registers(device)))

        def measure(params: dict[str, Any], func=func, data=data, grouped=grouped) -> list[float]:
            p = conv_grouped.GroupedParams.from_json(params) if grouped else ConvParams.from_json(params)
            scheduled = schedule_primfunc(func, lambda sch: schedule_any_conv(sch, p))
            return timer.tvm_kernel(scheduled, target, data, "float32", 1e-4)

        tasks.append(Task(layer.workload_key(), layer, [p.to_json() for p in space], measure))
    return tasks


def ranked(space, registers: int = 16):
    """Most promising first, so that a small --trials budget still finds a good kernel:
    rows outermost with per-tile padding, then about 12 accumulators of 16 registers (16 of
    32: the best tiles measured on Zen 3 and Zen 5). The accumulator count is counted in
    8-lane vectors, as the Zen 3 ranking was (a 16-lane tile counts twice per vector)."""
    target = 12 if registers < 32 else 32

    def score(p):
        return (p.order != "yfx_pad", p.order != "yfx", abs(p.tf * p.ty * max(1, p.tx // 8) - target), -p.tx)
    return sorted(space, key=score)

"""A ctypes binding to NNPACK's convolution, as exported by PyTorch's libtorch_cpu.so.

PyTorch only exposes NNPACK through `torch._nnpack_spatial_convolution`, which always uses
algorithm `auto` and recomputes the kernel transform on every call. Calling
`nnp_convolution_inference` directly gives what Caffe2's NNPACK engine had and what the
hybrid build chooses between: the algorithm (Winograd, FFT 8x8/16x16, implicit GEMM, direct),
the transform strategy (compute, or precompute the transformed weights once and reuse them),
and a fused ReLU.
"""
from __future__ import annotations

import ctypes
import enum
import functools
import os
import threading
from dataclasses import dataclass

import numpy as np

# The process environment of a build that runs NNPACK (Build.process_env). NNPACK runs on its
# own pthreadpool, beside PyTorch's OpenMP pool (pooling, resize, add). libgomp's workers spin
# for a while after each parallel region, and where there are as many cores as threads they
# steal the cores NNPACK's threads need: measured on 2 cores, the UNet's NNPACK layers ran up
# to 2x slower, in a mix that changed from run to run (caffe2-nnpack e2e 92-98 ms against
# 72-76 ms with OMP_WAIT_POLICY=PASSIVE). Caffe2 ran NNPACK on its one pool with nothing
# spinning beside it. Stock `torch` keeps the default: it is faster with spinning (57 against
# 62 ms), and it is what users get.
BESIDE_OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

_ALIGN = 64  # NNPACK rejects workspaces not aligned to a cache line (misaligned_buffer)


class Algorithm(enum.IntEnum):
    auto = 0
    ft8x8 = 1
    ft16x16 = 2
    wt8x8 = 3
    implicit_gemm = 4
    direct = 5
    wt8x8_fp16 = 6


class Strategy(enum.IntEnum):
    compute = 1
    precompute = 2  # transform the weights once, at build time
    reuse = 3  # run with weights transformed by `precompute`


STATUS_NAMES = {
    0: "success", 2: "invalid_batch_size", 3: "invalid_channels", 4: "invalid_input_channels",
    5: "invalid_output_channels", 10: "invalid_input_size", 11: "invalid_input_stride",
    12: "invalid_input_padding", 13: "invalid_kernel_size", 14: "invalid_pooling_size",
    15: "invalid_pooling_stride", 16: "invalid_algorithm", 17: "invalid_transform_strategy",
    20: "unsupported_input_size", 21: "unsupported_input_stride", 22: "unsupported_input_padding",
    23: "unsupported_kernel_size", 24: "unsupported_pooling_size", 25: "unsupported_pooling_stride",
    26: "unsupported_algorithm", 27: "unsupported_transform_strategy", 28: "unsupported_activation",
    29: "unsupported_activation_parameters", 50: "uninitialized", 51: "unsupported_hardware",
    52: "out_of_memory", 53: "insufficient_buffer", 54: "misaligned_buffer",
}


class NNPACKError(RuntimeError):
    def __init__(self, call: str, status: int):
        self.status = status
        name = STATUS_NAMES.get(status, "unknown")
        super().__init__(f"NNPACK {call} failed with status {status} (nnp_status_{name})")


class _Size(ctypes.Structure):
    _fields_ = [("width", ctypes.c_size_t), ("height", ctypes.c_size_t)]


class _Padding(ctypes.Structure):
    _fields_ = [("top", ctypes.c_size_t), ("right", ctypes.c_size_t),
                ("bottom", ctypes.c_size_t), ("left", ctypes.c_size_t)]


def _libtorch_path() -> str:
    import torch  # noqa: PLC0415 - only to locate the shared library

    return os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(_libtorch_path())
    f = lib.nnp_convolution_inference
    f.restype = ctypes.c_int
    f.argtypes = [
        ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t, _Size, _Padding, _Size, _Size,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_int, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.c_void_p,
    ]
    lib.pthreadpool_create.restype = ctypes.c_void_p
    lib.pthreadpool_create.argtypes = [ctypes.c_size_t]
    lib.pthreadpool_destroy.argtypes = [ctypes.c_void_p]
    status = lib.nnp_initialize()
    if status != 0:
        raise NNPACKError("nnp_initialize", status)
    return lib


def available() -> str | None:
    """None if NNPACK can be called here, else the reason it cannot."""
    try:
        _lib()
    except (OSError, AttributeError) as exc:
        return f"NNPACK is not exported by PyTorch's libtorch_cpu.so here: {exc}"
    except NNPACKError as exc:
        return str(exc)
    except ImportError:
        from harness.runner.deps import install_hint  # noqa: PLC0415

        # Names the board's way to get torch (none on armv7), not a bare "pip install torch".
        return f"PyTorch is not installed ({install_hint('torch')}); NNPACK is called through its libtorch_cpu.so"
    return None


class ThreadPool:
    """A pthreadpool owned by Python; NNPACK runs single-threaded with a NULL pool."""

    def __init__(self, threads: int):
        self.threads = threads
        self.handle = _lib().pthreadpool_create(threads) if threads > 1 else None

    def close(self) -> None:
        if self.handle:
            _lib().pthreadpool_destroy(self.handle)
            self.handle = None

    def __del__(self) -> None:
        self.close()


def _aligned_empty(nbytes: int) -> np.ndarray:
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    offset = (-raw.ctypes.data) % _ALIGN
    return raw[offset:offset + nbytes]


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


@dataclass(frozen=True)
class ConvShape:
    in_channels: int
    out_channels: int
    height: int  # of the input
    width: int
    kernel: tuple[int, int] = (3, 3)
    padding: int = 1
    stride: int = 1  # NNPACK's output_subsampling

    @property
    def out_height(self) -> int:
        return (self.height + 2 * self.padding - self.kernel[0]) // self.stride + 1

    @property
    def out_width(self) -> int:
        return (self.width + 2 * self.padding - self.kernel[1]) // self.stride + 1


# What nnp_convolution_inference accepts (NNPACK src/convolution-inference.c and
# include/nnpack/validation.h): no channel groups at all; padding smaller than the kernel on
# every side; wt8x8 only 3x3, and with stride 2 only where NEON has its strided output
# transform (ARM; on x86 the transform is missing and the call fails); ft8x8 kernels up to
# 8x8 and ft16x16 up to 16x16, both stride 1 only; direct only 1x1 stride 1 and only with the
# `compute` strategy; implicit_gemm any kernel and stride.

def shape_rule(shape: ConvShape, groups: int = 1) -> str | None:
    """Why NNPACK cannot compute this convolution with any algorithm, or None if it can."""
    if groups != 1:
        return "no grouped conv"
    if shape.padding >= min(shape.kernel):
        return "padding must be smaller than the kernel"
    return None


def algorithm_rule(shape: ConvShape, algorithm: Algorithm, strategy: Strategy = Strategy.compute,
                   neon: bool | None = None) -> str | None:
    """Why `algorithm` with `strategy` cannot compute `shape`, or None if NNPACK accepts it.
    `neon`: whether the NNPACK inside PyTorch here is the ARM build (None: this machine's)."""
    neon = is_arm() if neon is None else neon
    kmax, stride = max(shape.kernel), shape.stride
    if algorithm in (Algorithm.wt8x8, Algorithm.wt8x8_fp16):
        if shape.kernel != (3, 3):
            return f"{algorithm.name} is 3x3 only"
        if stride > 2:
            return f"{algorithm.name} takes stride 1 or 2"
        if stride == 2 and not neon:
            return f"{algorithm.name} stride 2 needs NEON"
    if algorithm in (Algorithm.ft8x8, Algorithm.ft16x16):
        limit = 8 if algorithm == Algorithm.ft8x8 else 16
        if kmax > limit or stride != 1:
            return f"{algorithm.name} needs a kernel up to {limit}x{limit} and stride 1"
    if algorithm == Algorithm.direct:
        if shape.kernel != (1, 1) or stride != 1:
            return "direct is 1x1 stride 1 only"
        if strategy != Strategy.compute:
            return "direct has no precomputed weights"
    return None


def auto_choice(shape: ConvShape) -> Algorithm:
    """The algorithm NNPACK's `auto` runs for this shape (its select_algorithm)."""
    if shape.stride == 1:
        if max(shape.kernel) == 1:
            return Algorithm.direct
        if shape.kernel == (3, 3):
            return Algorithm.wt8x8
        if min(shape.kernel) >= 2 and max(shape.kernel) <= 8:
            tiles8 = _tiles(shape, 8)
            return Algorithm.ft8x8 if tiles8 <= 4 * _tiles(shape, 16) else Algorithm.ft16x16
        if min(shape.kernel) >= 2 and max(shape.kernel) <= 16:
            return Algorithm.ft16x16
    return Algorithm.implicit_gemm


def _tiles(shape: ConvShape, tile: int) -> int:
    kh, kw = shape.kernel
    return -(-shape.out_height // (tile - kh + 1)) * -(-shape.out_width // (tile - kw + 1))


def is_arm() -> bool:
    import platform  # noqa: PLC0415

    return platform.machine().lower() in ("aarch64", "arm64") or platform.machine().lower().startswith("arm")


class Conv2d:
    """One NNPACK convolution (NCHW, batch 1, any stride its algorithm takes) bound to its weights.

    With Strategy.precompute, the weights are transformed once here and every call runs with
    Strategy.reuse, as Caffe2 did with `convolution_transform_strategy: PRECOMPUTE`.
    The workspace is allocated once, so calls allocate nothing.
    """

    def __init__(self, shape: ConvShape, weight: np.ndarray, bias: np.ndarray,
                 algorithm: Algorithm = Algorithm.auto, strategy: Strategy = Strategy.compute,
                 relu: bool = False, pool: ThreadPool | None = None, relu6: bool = False):
        if strategy == Strategy.reuse:
            raise ValueError("pass Strategy.precompute; reuse is what calls run with afterwards")
        self.shape, self.algorithm, self.strategy, self.relu = shape, Algorithm(algorithm), Strategy(strategy), relu
        # NNPACK fuses only ReLU; ReLU6 is a clamp on its output, as Caffe2's separate Clip op was.
        self.relu6 = relu6
        self.pool = pool
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        kh, kw = shape.kernel
        if self.weight.shape != (shape.out_channels, shape.in_channels, kh, kw):
            raise ValueError(f"weight shape {self.weight.shape} does not fit {shape}")
        self._lock = threading.Lock()  # the workspace is shared by calls
        self._kernel = self.weight
        self._call_strategy = Strategy.compute
        if strategy == Strategy.precompute:
            self._kernel = self._transform_weights()
            self._call_strategy = Strategy.reuse
        self._workspace = self._allocate_workspace()

    @property
    def impl(self) -> str:
        """How the result labels this kernel, e.g. `nnpack:wt8x8/precompute`."""
        return f"nnpack:{self.algorithm.name}/{self.strategy.name}"

    def _invoke(self, strategy: Strategy, inp, kernel, bias, out, workspace, size_ptr) -> int:
        s = self.shape
        kh, kw = s.kernel
        p = s.padding
        return _lib().nnp_convolution_inference(
            int(self.algorithm), int(strategy), s.in_channels, s.out_channels,
            _Size(s.width, s.height), _Padding(p, p, p, p), _Size(kw, kh), _Size(s.stride, s.stride),
            inp, kernel, bias, out, workspace, size_ptr,
            1 if self.relu else 0, None, self.pool.handle if self.pool else None, None)

    def _query_size(self, strategy: Strategy, kernel: int | None) -> int:
        size = ctypes.c_size_t(0)
        status = self._invoke(strategy, None, kernel, None, None, None, ctypes.byref(size))
        if status != 0:
            raise NNPACKError(f"{self.algorithm.name}/{strategy.name} workspace query", status)
        return size.value

    def _transform_weights(self) -> np.ndarray:
        nbytes = self._query_size(Strategy.precompute, None)
        transformed = _aligned_empty(nbytes)
        size = ctypes.c_size_t(nbytes)
        status = self._invoke(Strategy.precompute, None, _ptr(self.weight), None, None,
                              _ptr(transformed), ctypes.byref(size))
        if status != 0:
            raise NNPACKError(f"{self.algorithm.name} weight transform", status)
        return transformed

    def _allocate_workspace(self) -> np.ndarray | None:
        nbytes = self._query_size(self._call_strategy, _ptr(self._kernel))
        return _aligned_empty(nbytes) if nbytes else None

    def run_into(self, x: np.ndarray, out: np.ndarray) -> None:
        """x: (1, Cin, H, W) float32 C-contiguous; out: (1, Cout, OH, OW), written in place."""
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            raise ValueError("NNPACK needs a C-contiguous float32 input")
        size = ctypes.c_size_t(0 if self._workspace is None else self._workspace.nbytes)
        with self._lock:
            status = self._invoke(self._call_strategy, _ptr(x), _ptr(self._kernel), _ptr(self.bias),
                                  _ptr(out), _ptr(self._workspace), ctypes.byref(size))
        if status != 0:
            raise NNPACKError(f"{self.algorithm.name}/{self.strategy.name} convolution", status)
        if self.relu6:
            np.clip(out, 0.0, 6.0, out=out)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        s = self.shape
        out = np.empty((1, s.out_channels, s.out_height, s.out_width), dtype=np.float32)
        self.run_into(x, out)
        return out


# `direct` supports only 1x1 kernels (3x3 gives status 26, unsupported_algorithm), and on the
# x86 build inside PyTorch 2.13 it returns success for 1x1 without writing the output: a
# success status is not proof of a result, so callers that choose among algorithms must check
# each candidate's output against a reference before trusting its time.
#
# The algorithms the hybrid build may choose among. auto is only NNPACK's heuristic over these,
# and wt8x8_fp16 is excluded on purpose: on x86 it silently runs the fp32 path.
CANDIDATE_ALGORITHMS = (Algorithm.ft8x8, Algorithm.ft16x16, Algorithm.wt8x8,
                        Algorithm.implicit_gemm, Algorithm.direct)

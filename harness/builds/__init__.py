"""Builds of the UNet, one module each behind harness.builds.base.Build.

Modules are imported on first use so that a missing dependency (TVM on a device with only
PyTorch, say) fails only the builds that need it.
"""
from __future__ import annotations

import importlib

from harness.builds.base import Build
from harness.names import check_known
from harness.kernels.nnpack import BESIDE_OPENMP_ENV

# Name -> "module:Class", in the order results and reports list them.
REGISTRY: dict[str, str] = {
    "caffe2-nnpack": "harness.builds.caffe2_nnpack:Caffe2NNPACKBuild",
    "tvm": "harness.builds.tvm_pure:TVMBuild",
    "tvm-nnpack": "harness.builds.tvm_nnpack:TVMNNPACKBuild",
    "fp16-winograd": "harness.builds.fp16_winograd:FP16WinogradBuild",
    "torch": "harness.builds.torch_ref:TorchBuild",
    "onnxruntime": "harness.builds.onnxruntime_ref:ONNXRuntimeBuild",
    "qnnpack-int8": "harness.builds.qnnpack_int8:QNNPACKInt8Build",
}
BASELINE = "caffe2-nnpack"
# Builds whose module imports PyTorch: on a device without it they are unavailable, not a crash.
# Not onnxruntime: PyTorch exports its model on the host, the device needs only ONNX Runtime.
NEEDS_TORCH = frozenset({"caffe2-nnpack", "torch", "qnnpack-int8"})
# The environment of a build's own process (harness.runner.isolate), set before any library
# reads it, and recorded in the build's result; a build not named keeps the defaults users get.
# Here, not on the Build classes: the device's parent runner must not import torch to know it.
# qnnpack-int8 too: QNNPACK runs on PyTorch's pthreadpool beside the OpenMP workers of the
# ATen int8 kernels (cat, resize), as NNPACK does; the gain was measured for NNPACK (README),
# not yet for QNNPACK.
PROCESS_ENV: dict[str, dict[str, str]] = {"caffe2-nnpack": BESIDE_OPENMP_ENV, "tvm-nnpack": BESIDE_OPENMP_ENV,
                                          "qnnpack-int8": BESIDE_OPENMP_ENV}


def build_names() -> list[str]:
    return list(REGISTRY)


def check_build_names(names: list[str]) -> list[str]:
    return check_known(names, REGISTRY, "build")


def get_build(name: str) -> Build:
    """The build's instance. ImportError propagates: the runner records it as the failure."""
    module, cls = REGISTRY[check_build_names([name])[0]].split(":")
    return getattr(importlib.import_module(module), cls)()

"""What the on-device runner needs, listed once: `devices setup` installs it, the runner checks
it, `devices emulate` cross-installs it into the emulated board, and errors name it.

A device needs numpy and pyyaml for every run; the TVM runtime (plus the RPC extras TVM's
server imports) for the TVM builds and the farm; PyTorch only for the PyTorch builds (the fp32
reference is computed on the host and shipped with the request); ONNX Runtime for the
onnxruntime build (its model is exported on the host: no PyTorch needed for it).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

TVM_ARMV7 = ("on armv7 (32-bit Raspberry Pi OS) there is no wheel: cross-build the TVM runtime with "
             "scripts/build-armv7-runtime.sh, see docs/pi-setup.md")
TVM_REQUIREMENTS = ["apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post0"]  # pins match pyproject.toml
# tvm.rpc's server (the farm) and tvm.runtime's worker pool import these.
TVM_RPC_EXTRAS = ["cloudpickle", "psutil", "tornado"]
# torch per device arch. On aarch64, PyPI's torch 2.13.0 is the CUDA build (~3 GB; its
# libnvpl_blas_core uses ARMv8.1 LSE atomics, SIGILL on a Cortex-A72/A53); 2.9.1 is a CPU-only
# build (104 MB download, ~490 MB installed) that still exports NNPACK from libtorch_cpu.
TORCH_BY_ARCH = {"x86_64": "torch==2.13.0", "aarch64": "torch==2.9.1"}
ARCHES_WITH_WHEELS = ("x86_64", "aarch64")
# ONNX Runtime publishes wheels for x86_64 and aarch64 (Python >= 3.11 for 1.32), none for
# armv7. Pin matches pyproject.toml.
ONNXRUNTIME_REQUIREMENT = "onnxruntime==1.32.0"
ONNXRUNTIME_ARMV7 = "no armv7 wheel (32-bit Raspberry Pi OS): build it on the board or use the 64-bit OS"


@dataclass(frozen=True)
class Requirements:
    base: list[str]  # every run
    tvm: list[str]  # TVM builds and the farm
    torch: list[str]  # PyTorch builds
    onnxruntime: list[str]  # the onnxruntime build

    def all(self, with_torch: bool = True) -> list[str]:
        return self.base + self.tvm + self.onnxruntime + (self.torch if with_torch else [])


def device_requirements(arch: str) -> Requirements:
    """The pip requirements of a device of this arch (armv7: none beyond numpy and pyyaml)."""
    has_wheels = arch in ARCHES_WITH_WHEELS
    return Requirements(base=["numpy", "pyyaml"],
                        tvm=TVM_REQUIREMENTS + TVM_RPC_EXTRAS if has_wheels else [],
                        torch=[TORCH_BY_ARCH[arch]] if arch in TORCH_BY_ARCH else [],
                        onnxruntime=[ONNXRUNTIME_REQUIREMENT] if has_wheels else [])


# import name -> how to install it on the device
INSTALL: dict[str, str] = {
    "numpy": "pip install numpy",
    "yaml": "pip install pyyaml",
    "torch": f"pip install {TORCH_BY_ARCH['aarch64']} on aarch64 (CPU-only), {TORCH_BY_ARCH['x86_64']} on "
             "x86_64; see docs/pi-setup.md for armv7",
    "tvm": f"pip install {TVM_REQUIREMENTS[0]} on aarch64/x86_64; {TVM_ARMV7}",
    "tvm_ffi": f"pip install {TVM_REQUIREMENTS[1]} on aarch64/x86_64; {TVM_ARMV7}",
    "onnxruntime": f"pip install {ONNXRUNTIME_REQUIREMENT} on aarch64/x86_64 (Python >= 3.11); {ONNXRUNTIME_ARMV7}",
}
# Every run needs these: the measurement code and devices.yaml records. torch is not among
# them: the host ships the reference output, and a build that needs torch says so.
REQUIRED = ("numpy", "yaml")


def install_hint(module: str) -> str:
    top = module.split(".")[0]
    return INSTALL.get(top, f"pip install {top}")


def missing_message(module: str, python: str = "python") -> str:
    return f"missing dependency {module!r} on the device ({python}); install it: {install_hint(module)}"


def missing_required() -> list[str]:
    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None

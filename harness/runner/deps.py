"""What the on-device runner needs, and how to install what is missing on a board."""
from __future__ import annotations

import importlib.util

TVM_ARMV7 = ("on armv7 (32-bit Raspberry Pi OS) there is no wheel: build the TVM runtime on the "
             "board, see docs/pi-setup.md")
# import name -> how to install it on the device
INSTALL: dict[str, str] = {
    "numpy": "pip install numpy",
    "yaml": "pip install pyyaml",
    "torch": "pip install torch (wheels exist for aarch64 and x86_64; see docs/pi-setup.md for armv7)",
    "tvm": f"pip install apache-tvm==0.27.0.post1 on aarch64/x86_64; {TVM_ARMV7}",
    "tvm_ffi": f"pip install apache-tvm-ffi==0.1.14.post0 on aarch64/x86_64; {TVM_ARMV7}",
}
# Every run needs these: the measurement code, devices.yaml records, and the PyTorch reference.
REQUIRED = ("numpy", "yaml", "torch")


def install_hint(module: str) -> str:
    top = module.split(".")[0]
    return INSTALL.get(top, f"pip install {top}")


def missing_message(module: str, python: str = "python") -> str:
    return f"missing dependency {module!r} on the device ({python}); install it: {install_hint(module)}"


def missing_required() -> list[str]:
    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]

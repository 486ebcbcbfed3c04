"""Cross-compiling TVM builds for a device: relax.build for the device's target (a dict with
its mtriple, mcpu, mattr), then export_library linked by Debian's cross g++
(device.cross_compiler: arm-linux-gnueabihf-g++ for armv7, aarch64-linux-gnu-g++ for aarch64).

The TVM builds call export_for_device from their export(); the device loads the .so with
tvm.runtime.load_module and runs it in the Relax VM.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from harness.devices.config import Device
from harness.errors import UserError

CROSS_PACKAGES = {"arm-linux-gnueabihf-g++": "g++-arm-linux-gnueabihf",
                  "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu"}


def is_cross(device: Device) -> bool:
    return device.target != "host" and bool(device.cross_compiler)


def linker(device: Device) -> Callable[..., Any] | None:
    """export_library's fcompile for the device: None (the host's g++) unless it cross-compiles."""
    if not is_cross(device):
        return None
    compiler = device.cross_compiler or ""
    if shutil.which(compiler) is None:
        package = CROSS_PACKAGES.get(compiler, "the cross compiler")
        raise UserError(f"device {device.name!r}: cross compiler {compiler!r} not found; install "
                        f"{package} (scripts/setup.sh --dev does)")
    from tvm.support import cc  # noqa: PLC0415

    return cc.cross_compiler(compiler)


def build_for_device(mod: Any, device: Device) -> Any:
    """A Relax IRModule compiled for the device's target (not the host's)."""
    from tvm import relax  # noqa: PLC0415

    from harness.builds.tvm_common import make_target  # noqa: PLC0415 - one target dict for all builds

    return relax.build(mod, target=make_target(device))


def export_for_device(executable: Any, device: Device, path: Path) -> Path:
    """Write a relax.build result as a shared object the device can load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    executable.export_library(str(path), fcompile=linker(device))
    return path

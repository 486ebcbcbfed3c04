"""What `harness devices check` reports about the machine this runs on, as JSON on stdout.

Runs on the device (`python -m harness.devices.probe`, from the uploaded harness zip) with the
same stdlib collect_* functions a run records, so a check and a run see the same numbers.
Standard library only (plus what harness.devices imports).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import sys
from typing import Any

from harness.devices.peaks import detect_host
from harness.devices.state import _read, collect_state

# distribution name -> import name, for the runtime packages a run may need
PACKAGES = {"numpy": "numpy", "pyyaml": "yaml", "torch": "torch", "apache-tvm": "tvm", "onnxruntime": "onnxruntime"}


def package_version(dist: str, module: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pass
    if importlib.util.find_spec(module) is None:
        return None
    # Installed without metadata, e.g. a TVM runtime built on the board: ask the module.
    try:
        return str(getattr(__import__(module), "__version__", "unknown"))
    except Exception as exc:  # noqa: BLE001 - reported as the version string, check goes on
        return f"broken ({type(exc).__name__}: {exc})"


def probe() -> dict[str, Any]:
    host = detect_host()
    return {"arch": host.arch, "cpu_model": host.cpu_model, "cpu": host.cpu, "cores": host.cores,
            "isa": list(host.isa), "board": (_read("/proc/device-tree/model") or "").rstrip("\x00") or None,
            "python": platform.python_version(), "executable": sys.executable,
            "state": collect_state().to_json(),
            "packages": {dist: package_version(dist, mod) for dist, mod in PACKAGES.items()}}


if __name__ == "__main__":
    json.dump(probe(), sys.stdout)
    sys.stdout.write("\n")

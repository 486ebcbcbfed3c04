"""`harness devices setup NAME`: prepare a device once: its workdir, a virtualenv for the
device's `python` if that does not exist yet, and the runtime packages in it.

Which packages: harness.runner.deps.device_requirements (numpy and pyyaml always; the TVM
runtime with its RPC extras, ONNX Runtime and torch where wheels exist). armv7 has no torch, TVM
or ONNX Runtime wheels on PyPI: see docs/pi-setup.md.
"""
from __future__ import annotations

import posixpath

from rich.console import Console

from harness.devices.config import Device
from harness.errors import UserError
from harness.runner.deps import device_requirements


def default_packages(device: Device, with_torch: bool = True) -> list[str]:
    """numpy, pyyaml, the TVM runtime with its RPC extras, ONNX Runtime and, unless not wanted, torch."""
    return device_requirements(device.arch).all(with_torch)


def venv_of(python: str) -> str | None:
    """The virtualenv directory a `.../bin/python` path belongs to, if it looks like one."""
    bindir, exe = posixpath.split(python)
    return posixpath.dirname(bindir) if posixpath.basename(bindir) == "bin" and exe.startswith("python") else None


def run_setup(device: Device, packages: list[str] | None, console: Console, with_torch: bool = True) -> None:
    if device.transport != "ssh":
        raise UserError(f"device {device.name!r}: setup works over ssh; a {device.transport} device is "
                        "prepared on the board itself (see docs/pi-setup.md)")
    from harness.devices.ssh import connect  # noqa: PLC0415

    packages = default_packages(device, with_torch) if packages is None else packages
    with connect(device) as s:
        short = device.connect_timeout_s * 6
        s.run(["mkdir", "-p", "--", posixpath.join(device.workdir, "cache"), posixpath.join(device.workdir, "runs")],
              timeout_s=short)
        console.print(f"workdir {device.workdir} ready", highlight=False)
        if s.run(["test", "-x", device.python], timeout_s=short, check=False).exit_status != 0:
            venv = venv_of(device.python)
            if venv is None:
                raise UserError(f"device {device.name!r}: {device.python!r} does not exist and is not a "
                                ".../bin/python of a virtualenv that setup could create")
            # system site packages: Debian's python3-numpy etc. count on boards without wheels
            no_pip = [] if packages else ["--without-pip"]  # nothing to install: skip ensurepip
            s.run(["python3", "-m", "venv", "--system-site-packages", *no_pip, venv], timeout_s=short * 5)
            console.print(f"created the virtualenv {venv}", highlight=False)
        if packages:
            console.print(f"installing on the device: {' '.join(packages)}", highlight=False)
            s.run([device.python, "-m", "pip", "install", "--disable-pip-version-check", *packages],
                  timeout_s=device.command_timeout_s)
    if device.arch == "armv7l":
        console.print("armv7: torch, the TVM runtime and ONNX Runtime have no wheels; build them on the board as "
                      "docs/pi-setup.md describes", highlight=False)

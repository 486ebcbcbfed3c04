"""Cross-compiled TVM artifacts for the Pi targets in devices.yaml, checked with readelf."""
from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.deploy.cross import build_for_device, export_for_device
from harness.devices import load_devices
from harness.errors import UserError


def conv_relu_module():
    from tvm import relax  # noqa: PLC0415

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 16, 16), "float32"))
    w = relax.Var("w", relax.TensorType((8, 3, 3, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, padding=1))
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)
    return bb.get()


def elf_header(path: Path) -> str:
    return subprocess.run(["readelf", "-h", str(path)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name, machine", [("rasp3b", "ARM"), ("rasp4", "AArch64")])
def test_cross_compiled_shared_object_for_the_pi(name: str, machine: str, tmp_path: Path):
    device = load_devices().get(name)
    lib = export_for_device(build_for_device(conv_relu_module(), device), device, tmp_path / f"{name}.so")
    header = elf_header(lib)
    assert "DYN (Shared object file)" in header
    assert [ln.split(":", 1)[1].strip() for ln in header.splitlines() if "Machine:" in ln] == [machine]
    if machine == "ARM":
        assert "hard-float ABI" in header  # armv7l-linux-gnueabihf, as Raspberry Pi OS


def test_missing_cross_compiler_is_a_clear_error(tmp_path: Path):
    device = dataclasses.replace(load_devices().get("rasp4"), cross_compiler="no-such-aarch64-g++")
    with pytest.raises(UserError, match="cross compiler 'no-such-aarch64-g\\+\\+' not found"):
        export_for_device(build_for_device(conv_relu_module(), device), device, tmp_path / "x.so")


def test_armv7_entry_without_float_abi_links_hard_float(tmp_path: Path):
    """A user's armv7 entry naming only mtriple/mcpu/mattr: without "mfloat-abi": "hard" the
    export dies in ld ("uses VFP register arguments, devc.o does not"); the loader adds it."""
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"default": "pi3", "devices": {"pi3": {
        "transport": "ssh", "host": "pi3.local", "arch": "armv7l", "cpu": "cortex-a53", "cores": 4,
        "freq_ghz": 1.2, "cross_compiler": "arm-linux-gnueabihf-g++",
        "target": {"kind": "llvm", "mtriple": "armv7l-linux-gnueabihf", "mcpu": "cortex-a53", "mattr": ["+neon"]}}}}))
    device = load_devices(devices).get("pi3")
    assert device.target["mfloat-abi"] == "hard"
    header = elf_header(export_for_device(build_for_device(conv_relu_module(), device), device, tmp_path / "pi3.so"))
    assert "Machine:                           ARM" in header and "hard-float ABI" in header

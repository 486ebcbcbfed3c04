"""What a result's times depend on: the machine (hashed) and the software (annotated).

A result's `fingerprint` block has three parts:

    hardware       CPU identity (vendor, family/model/stepping on x86, implementer/part/variant
                   on ARM, the model name, the LLVM cpu configured for the device), its SIMD
                   flags, the cores online and the threads the device uses, memory, emulated
    hardware_hash  sha256 of the canonical JSON of `hardware`, first 16 hex digits; "unknown"
                   for results made before fingerprints (schema v2)
    software       kernel, python, numpy, torch, TVM, NNPACK (inside torch) versions and the
                   sha256 of the tuning databases the builds applied (tuning/<device>/<cpu-key>/,
                   which CPU's is part of the name); a change here is an annotation, not a new
                   machine

Why the CPU identity and not the model name: both AMD EPYC kinds seen here (Zen 3, Zen 5)
report "AMD EPYC"; their cpu family (25 vs 26) tells them apart. Why the kernel is software:
a kernel update on the same board is a change to annotate on the history, like a torch update;
a different board is a different machine. Standard library only: this runs on the device,
inside the on-device runner.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from harness.devices.config import Device
from harness.devices.peaks import parse_cpuinfo, read_cpuinfo

UNKNOWN = "unknown"
HASH_DIGITS = 16
# The flags that change which kernels run (and so the times); the rest of /proc/cpuinfo's
# flags (mitigations, hypervisor features) differ between hosts of one kind and say nothing.
SIMD_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "neon", "asimd", "fphp", "sve",
                 "vfp", "i8mm", "bf16", "dotprod")
X86_ID = ("vendor_id", "cpu family", "model", "stepping")
ARM_ID = ("CPU implementer", "CPU architecture", "CPU variant", "CPU part", "CPU revision")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def collect_cpu(cpuinfo_text: str | None = None) -> dict[str, Any]:
    info = read_cpuinfo() if cpuinfo_text is None else parse_cpuinfo(cpuinfo_text)
    ident = {k: info[k] for k in (*X86_ID, *ARM_ID) if k in info}
    flags = set((info.get("flags") or info.get("Features") or "").split())
    simd = sorted(f for f in flags if f.startswith(SIMD_PREFIXES))
    return {"id": ident, "model_name": info.get("model name", UNKNOWN), "simd": simd}


def collect_memory_gib(meminfo_text: str | None = None) -> float | None:
    """MemTotal rounded to 0.5 GiB: the kernel's own reservations move it by a few MB."""
    text = _read("/proc/meminfo") if meminfo_text is None else meminfo_text
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20 * 2) / 2
    return None


def _cores_online() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def collect_hardware(device: Device) -> dict[str, Any]:
    return {"arch": platform.machine(), "cpu": collect_cpu(), "llvm_cpu": device.cpu,
            "cores_online": _cores_online(), "threads": device.cores,
            "memory_gib": collect_memory_gib(),
            "emulated": device.emulated}


# module -> the distribution that installs it (what importlib.metadata knows it by)
DISTRIBUTIONS = {"numpy": "numpy", "torch": "torch", "tvm": "apache-tvm", "onnxruntime": "onnxruntime"}


def installed_versions(modules: tuple[str, ...]) -> dict[str, str]:
    """Versions of those modules as this Python would import them, without importing them.

    Why not the imported modules' __version__: the device's parent runner imports neither
    torch nor TVM (each build runs in a child process, harness.runner.isolate), so its
    fingerprint would say nothing about them. A module already imported still reports its own
    version: that is what ran, even where a source checkout shadows the installed package."""
    from importlib import metadata  # noqa: PLC0415

    found = {}
    for module in modules:
        if module in sys.modules:
            found[module] = getattr(sys.modules[module], "__version__", UNKNOWN)
            continue
        try:
            found[module] = metadata.version(DISTRIBUTIONS.get(module, module))
        except metadata.PackageNotFoundError:
            pass  # not installed on this device: absent, as a build that needs it is unavailable
    return found


def collect_software() -> dict[str, Any]:
    software = {"kernel": platform.release(), "python": platform.python_version(),
                **installed_versions(("numpy", "torch", "tvm", "onnxruntime"))}
    if "torch" in software:  # NNPACK has no version of its own: it is the copy inside torch
        software["nnpack"] = f"libtorch_cpu of torch {software['torch']}"
    return software


def short_hash(data: bytes) -> str:
    """sha256, first HASH_DIGITS hex digits: how fingerprints name contents."""
    return hashlib.sha256(data).hexdigest()[:HASH_DIGITS]


def hardware_hash(hardware: dict[str, Any] | None) -> str:
    if not hardware:
        return UNKNOWN
    return short_hash(json.dumps(hardware, sort_keys=True, separators=(",", ":")).encode())


def make_fingerprint(hardware: dict[str, Any] | None, software: dict[str, Any]) -> dict[str, Any]:
    return {"hardware": hardware, "hardware_hash": hardware_hash(hardware), "software": software}


def collect_fingerprint(device: Device, measured_with: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fingerprint of the machine this code runs on (the device, in the on-device runner);
    measured_with: software settings of the measurement itself (the allocator), which move
    times like a library version does."""
    return make_fingerprint(collect_hardware(device), {**collect_software(), **(measured_with or {})})


def from_config(device: Device) -> dict[str, Any]:
    """For transports whose boards run no harness code (the TVM RPC farm): the hardware is what
    devices.yaml says, marked so; the host's own CPU would be the wrong machine."""
    hardware = {"arch": device.arch, "cpu": {"model_name": device.cpu_model}, "llvm_cpu": device.cpu,
                "threads": device.cores, "source": "devices.yaml",
                "emulated": bool(getattr(device, "emulated", False))}
    return make_fingerprint(hardware, {})


def tuning_hashes(builds: list[dict[str, Any]]) -> dict[str, str]:
    """sha256 (16 digits) of each tuning database the builds applied, by its path under
    tuning/ (<device>/<cpu-key>/<kind>.json), as the builds recorded them when they read them."""
    return {used["database"]: used["sha256"] for build in builds for used in build.get("tuning", [])
            if used.get("database") and used.get("sha256")}


def with_tuning(fingerprint: dict[str, Any], builds: list[dict[str, Any]]) -> dict[str, Any]:
    """The databases are read on the host (TVM compiles there); added to the device's block."""
    return {**fingerprint, "software": {**fingerprint["software"], "tuning": tuning_hashes(builds)}}


def unknown_fingerprint() -> dict[str, Any]:
    """What a result from before fingerprints (schema v2) gets: never equal to a known one."""
    return make_fingerprint(None, {})


def describe(hardware: dict[str, Any] | None) -> str:
    """One short phrase naming a machine, for messages."""
    if not hardware:
        return "unknown machine (result from before fingerprints)"
    cpu = hardware.get("cpu") or {}
    ident = cpu.get("id") or {}
    family = "/".join(ident[k] for k in ("cpu family", "model", "stepping") if k in ident)
    part = ident.get("CPU part")
    detail = f"family/model/stepping {family}" if family else (f"part {part}" if part else "")
    name = cpu.get("model_name", UNKNOWN)
    threads = hardware.get("threads")
    return ", ".join(x for x in (name, detail, f"{threads} threads" if threads else "",
                                 "emulated" if hardware.get("emulated") else "") if x)


def software_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """'torch 2.12 -> 2.13'-style notes for every software entry that differs."""
    notes = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            notes.append(f"{key} {before.get(key, 'none')} -> {after.get(key, 'none')}")
    return notes

"""A RunRequest as JSON, for the trip from the host to the on-device runner (never pickle:
a device's output is data, not code)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from harness.devices.config import Device, Tracker
from harness.runner.measure import Settings


def device_to_json(device: Device) -> dict[str, Any]:
    d = dataclasses.asdict(device)
    d["isa"] = list(device.isa)
    return d


def device_from_json(d: dict[str, Any]) -> Device:
    d = dict(d)
    d["isa"] = tuple(d.get("isa", ()))
    d["tracker"] = Tracker(**d["tracker"]) if d.get("tracker") else None
    return Device(**d)


REFERENCE_FILE = "reference.npy"  # the host's fp32 reference output, beside the request


def request_to_json(model: str, device: Device, builds: list[str], settings: Settings,
                    options: dict[str, dict[str, Any]], artifacts: str | None,
                    reference: str | None = None) -> dict[str, Any]:
    return {"model": model, "device": device_to_json(device), "builds": list(builds),
            "settings": {"warmup": settings.warmup, "repeats": settings.repeats},
            "options": options, "artifacts": artifacts, "reference": reference}


def request_from_json(doc: dict[str, Any], base: Path | None = None):
    """The RunRequest a JSON request describes; artifacts are relative to `base`."""
    from harness.model import get_model  # noqa: PLC0415 - after the dependency check
    from harness.runner.run import RunRequest  # noqa: PLC0415

    artifacts = doc.get("artifacts")
    if artifacts is not None and base is not None:
        artifacts = base / artifacts
    reference = doc.get("reference")
    if reference is not None and base is not None:
        reference = base / reference
    return RunRequest(get_model(doc["model"]), device_from_json(doc["device"]), list(doc["builds"]),
                      Settings(**doc["settings"]), doc.get("options") or {},
                      Path(artifacts) if artifacts else None, Path(reference) if reference else None)

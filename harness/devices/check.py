"""`harness devices check NAME`: is the device reachable, what is it, is it ready to measure.

The facts come from harness.devices.probe run ON the device (the harness zip is uploaded and
run with the device's python), so they are the same collect_* functions a run records.
"""
from __future__ import annotations

import json
import posixpath
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.devices.config import Device
from harness.devices.state import state_warnings
from harness.errors import UserError
from harness.runner.deps import install_hint
from harness.terminal import warn

HOT_C = 80.0  # the Pi firmware starts soft-throttling at 80 C


def probe_over_ssh(device: Device) -> dict[str, Any]:
    from harness.deploy.package import write_harness_zip  # noqa: PLC0415
    from harness.deploy.ssh_run import UploadLog, upload_cached  # noqa: PLC0415
    from harness.devices.ssh import connect  # noqa: PLC0415

    with connect(device) as s, tempfile.TemporaryDirectory(prefix="harness-check-") as tmp:
        cache = posixpath.join(device.workdir, "cache")
        s.run(["mkdir", "-p", "--", cache], timeout_s=device.connect_timeout_s * 3)
        zip_path = upload_cached(s, write_harness_zip(Path(tmp)), cache, UploadLog())
        result = s.run([device.python, "-m", "harness.devices.probe"], env={"PYTHONPATH": zip_path},
                       timeout_s=device.connect_timeout_s * 6, check=False)
    if result.exit_status == 127:
        raise UserError(f"device {device.name!r}: {device.python!r} not found; run `harness devices setup {device.name}`")
    if result.exit_status != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        if "No module named" in last:
            module = last.split("'")[1] if "'" in last else last
            last += f"; install it: {install_hint(module)} (or run `harness devices setup {device.name}`)"
        raise UserError(f"device {device.name!r}: the probe failed (exit {result.exit_status}): {last}")
    return json.loads(result.stdout)


def probe_device(device: Device) -> dict[str, Any]:
    if device.transport == "local":
        from harness.devices.probe import probe  # noqa: PLC0415

        return probe()
    if device.transport == "ssh":
        return probe_over_ssh(device)
    from harness.farm.client import probe_on_farm  # noqa: PLC0415

    return probe_on_farm(device)


def check_warnings(device: Device, info: dict[str, Any]) -> list[str]:
    state = info["state"]
    warnings = state_warnings(state, None, info["cores"])
    if state.get("freq_fixed") is None:
        warnings.append("cannot tell whether the CPU frequency is fixed (no cpufreq scaling limits); "
                        "numbers may drift with the clock")
    if (state.get("temp_c") or 0) >= HOT_C:
        warnings.append(f"the device is hot ({state['temp_c']:.1f} C); it will throttle")
    if info["cores"] != device.cores:
        warnings.append(f"devices.yaml says {device.cores} cores, the device has {info['cores']}")
    if info["arch"] != device.arch:
        warnings.append(f"devices.yaml says arch {device.arch}, the device is {info['arch']}")
    for dist, version in info["packages"].items():
        if version is None and dist in ("numpy", "pyyaml"):  # torch: only its own builds need it
            warnings.append(f"{dist} is missing on the device; {install_hint({'pyyaml': 'yaml'}.get(dist, dist))}")
    return warnings


def check_table(device: Device, info: dict[str, Any]) -> Table:
    st = info["state"]
    freq = st.get("freq_mhz")
    rows = [
        ("reachable", f"yes ({device.transport})"),
        ("board", info.get("board") or "-"),
        ("CPU", f"{info['cpu_model']} ({info['arch']}{', ' + info['cpu'] if info.get('cpu') else ''})"),
        ("cores", str(info["cores"])),
        ("governor", st.get("governor") or "unknown"),
        ("frequency", (f"{min(freq):.0f}-{max(freq):.0f} MHz" if freq else "unknown")
         + {True: " (fixed)", False: " (NOT fixed)", None: ""}[st.get("freq_fixed")]),
        ("temperature", f"{st['temp_c']:.1f} C" if st.get("temp_c") is not None else "unknown"),
        ("throttled", st.get("throttled") or "n/a (no vcgencmd)"),
        ("load", f"{st['load_1m']:.2f}"),
        ("python", f"{info['python']} ({info['executable']})"),
        *((dist, version or "MISSING") for dist, version in info["packages"].items()),
    ]
    table = Table(title=f"device {device.name}", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(Text(key), Text(value))
    return table


def run_check(device: Device, console: Console) -> dict[str, Any]:
    info = probe_device(device)
    console.print(check_table(device, info))
    for w in check_warnings(device, info):
        warn(console, w)
    return info

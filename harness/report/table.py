"""The per-layer table printed at the end of `harness run`."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.devices.config import EMULATED_LABEL
from harness.devices.peak_basis import NOMINAL_CLOCK, basis_of
from harness.devices.state import state_warnings
from harness.report.peak_check import clock_warning, peak_warnings
from harness.runner.stats import noise_warning
from harness.terminal import labelled, warn


def rate_unit(build: dict[str, Any]) -> str:
    """GOP/s for a build measured against the int8 peak (its operations are int8, not floating
    point), GFLOP/s for the others."""
    return "GOP/s" if build.get("peak_dtype") == "int8" else "GFLOP/s"


def peaks_text(peak: dict[str, float]) -> str:
    """'153.6 GFLOP/s fp32, 307.2 fp16, 614.4 GOP/s int8' (int8 only where the file has it)."""
    text = f"{peak['fp32']:.1f} GFLOP/s fp32, {peak['fp16']:.1f} fp16"
    return text + (f", {peak['int8']:.1f} GOP/s int8" if "int8" in peak else "")


def peak_basis_text(doc: dict[str, Any]) -> str:
    """'at the measured clock, 4028 MHz; nominal 2596 MHz: 332.3 GFLOP/s fp32': what the peak
    % of peak is a share of assumes, and the nominal figure where that is not it."""
    basis = basis_of(doc)
    text = f"at the {basis.basis}, {basis.clock_mhz:.0f} MHz"
    if basis.basis != NOMINAL_CLOCK:
        text += f"; nominal {1000 * doc['device']['freq_ghz']:.0f} MHz: {doc['device']['peak_gflops']['fp32']:.1f} GFLOP/s fp32"
    return text


def _ok_builds(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in doc["builds"] if b["layers"]]


def varying_impl(build: dict[str, Any]) -> bool:
    """Whether this build's convolutions differ in implementation (the hybrid's do)."""
    return len({layer["impl"] for layer in build["layers"] if layer["op"] == "conv2d"}) > 1


def impl_legend(build: dict[str, Any]) -> str:
    by_op: dict[str, str] = {}
    for layer in build["layers"]:
        by_op.setdefault(layer["op"], layer["impl"])
    return f"{build['name']}: " + ", ".join(f"{op} {impl}" for op, impl in by_op.items())


def layer_table(doc: dict[str, Any]) -> Table:
    builds = _ok_builds(doc)
    dev = doc["device"]
    peak = basis_of(doc).gflops  # what every %peak below is a share of
    # An emulated board's label leads the title: its numbers must not be read as a Pi's.
    emulated = f"{EMULATED_LABEL} - " if dev.get("emulated") else ""
    int8 = " (GOP/s for int8 builds)" if any(rate_unit(b) == "GOP/s" for b in builds) else ""
    table = Table(title=f"{emulated}{doc['model']['name']} on {dev['name']} ({dev['cores']} cores, "
                        f"peak {peaks_text(peak)}) - GFLOP/s are effective (direct-convolution FLOPs){int8}",
                  title_justify="left", caption=f"peak and %peak {peak_basis_text(doc)}", caption_justify="left")
    table.add_column("layer", no_wrap=True)
    table.add_column("op", no_wrap=True)
    table.add_column("MFLOP", justify="right", no_wrap=True)
    for b in builds:
        table.add_column(f"{b['name']}\n{rate_unit(b)}", justify="right", no_wrap=True)
        table.add_column("%peak", justify="right", no_wrap=True)
        if varying_impl(b):
            table.add_column("impl", no_wrap=True)
    rows = zip(*[b["layers"] for b in builds]) if builds else []
    for layers in rows:
        first = layers[0]
        cells = [first["id"], first["op"], f"{first['flops'] / 1e6:.1f}"]
        for b, layer in zip(builds, layers):
            cells += [f"{layer['gflops']:.1f}", f"{layer['pct_peak']:.0f}%"]
            if varying_impl(b):
                cells.append(layer["impl"])
        table.add_row(*cells)
    if builds:
        total = ["network (e2e)", "", f"{doc['model']['total_flops'] / 1e6:.0f}"]
        for b in builds:
            ms = b["e2e"]["median_ms"]
            total += [f"{doc['model']['total_flops'] / (ms * 1e6):.1f}", f"{ms:.1f} ms"]
            if varying_impl(b):
                total.append("")
        table.add_section()
        table.add_row(*total)
    return table


def run_warnings(doc: dict[str, Any]) -> list[str]:
    warnings = state_warnings(doc["system"]["before"], doc["system"]["after"], doc["device"]["cores"])
    if w := clock_warning(doc):
        warnings.append(w)
    warnings += peak_warnings(doc)
    for b in _ok_builds(doc):
        if w := noise_warning(f"{b['name']} end-to-end", b["e2e"]["samples_ms"]):
            warnings.append(w)
        noisy = [layer["id"] for layer in b["layers"] if noise_warning("", layer["samples_ms"])]
        if noisy:
            warnings.append(f"{b['name']}: {len(noisy)} noisy layer(s): {', '.join(noisy[:6])}"
                            + (" ..." if len(noisy) > 6 else ""))
    return warnings


def print_run(doc: dict[str, Any], console: Console) -> None:
    console.print(layer_table(doc))
    uniform = [impl_legend(b) for b in _ok_builds(doc) if not varying_impl(b)]
    if uniform:
        console.print(Text("impl (same for every layer of an op): " + "; ".join(uniform)))
    for b in doc["builds"]:
        if b["status"] != "ok":
            console.print(labelled(f"build {b['name']} failed:", "red", str(b["message"])))
        elif "max_rel_error" in b:
            console.print(Text(f"{b['name']}: max relative error vs fp32 reference {b['max_rel_error']:.2e} "
                               f"(tolerance {b['tolerance']:.2g})"))  # .0e showed int8's 0.25 as 2e-01
        for note in b.get("notes", []):
            console.print(Text(f"{b['name']}: {note}"))
    for w in run_warnings(doc):
        warn(console, w)

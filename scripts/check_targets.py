#!/usr/bin/env python3
"""Check issue 3's speed targets on ONE result file (all builds measured in the same run).

    .venv/bin/python scripts/check_targets.py [RESULT.json]   (default: the newest result)

Targets, all ratios of medians taken in that one run:
  1. tvm-nnpack e2e <= 0.80 x caffe2-nnpack e2e
  2. tvm-nnpack no slower than the faster of tvm and caffe2-nnpack on any layer, within noise
     (noise: the layer's interquartile range, relative to its median, for each build)
  3. the fastest build's e2e <= 1.0 x torch
  4. every 3x3 conv of the fastest build >= 40% of the device's fp32 peak, effective GFLOP/s
     (the peak the result's % of peak uses: at the measured clock where the clock is not pinned)
This is a benchmark report, not a test: it prints the figures and exits 1 if a target is missed.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.devices.peak_basis import basis_of  # noqa: E402
from harness.results.store import find_results, load_result  # noqa: E402
from harness.runner.stats import summarize  # noqa: E402


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else max(find_results(), key=lambda p: p.stat().st_mtime)
    doc = load_result(path)
    builds = {b["name"]: b for b in doc["builds"] if b["status"] == "ok"}
    e2e = {name: b["e2e"]["median_ms"] for name, b in builds.items()}
    print(f"{path}\nmodel {doc['model']['name']} on {doc['device']['name']}, "
          f"fp32 peak {basis_of(doc).gflops['fp32']:.1f} GFLOP/s at the {basis_of(doc).basis}")
    for name, ms in sorted(e2e.items(), key=lambda kv: kv[1]):
        print(f"  {name:14s} e2e median {ms:9.2f} ms")
    ok = True

    def verdict(label: str, passed: bool, detail: str) -> None:
        nonlocal ok
        ok &= passed
        print(f"[{'PASS' if passed else 'MISS'}] {label}: {detail}")

    need = {"tvm-nnpack", "caffe2-nnpack", "tvm", "torch"}
    missing = need - set(builds)
    if missing:
        print(f"builds missing or failed in this run: {', '.join(sorted(missing))}")
        return 1
    ratio = e2e["tvm-nnpack"] / e2e["caffe2-nnpack"]
    verdict("1. tvm-nnpack / caffe2-nnpack e2e", ratio <= 0.80, f"{ratio:.3f} (target <= 0.80)")

    layers = {name: {layer["id"]: layer for layer in b["layers"]} for name, b in builds.items()}
    slower = []
    for lid, hybrid in layers["tvm-nnpack"].items():
        best_name = min(("tvm", "caffe2-nnpack"), key=lambda n: layers[n][lid]["median_ms"])
        best = layers[best_name][lid]
        noise = max(summarize(hybrid["samples_ms"]).spread, summarize(best["samples_ms"]).spread)
        r = hybrid["median_ms"] / best["median_ms"]
        if r > 1 + noise:
            slower.append(f"{lid} {r:.2f}x {best_name} (noise {noise:.0%}, impl {hybrid['impl']})")
    verdict("2. tvm-nnpack per layer vs min(tvm, caffe2-nnpack)", not slower,
            "no layer slower beyond noise" if not slower else "; ".join(slower))

    fastest = min(e2e, key=e2e.get)
    r = e2e[fastest] / e2e["torch"]
    verdict("3. fastest build / torch e2e", r <= 1.0, f"{fastest}: {r:.3f} (target <= 1.0)")

    peak = basis_of(doc).gflops["fp32"]
    low = [f"{layer['id']} {100 * layer['gflops'] / peak:.0f}%" for layer in builds[fastest]["layers"]
           if layer["op"] == "conv2d" and layer["gflops"] < 0.40 * peak]
    convs = [layer for layer in builds[fastest]["layers"] if layer["op"] == "conv2d"]
    print("   fastest build's convs, % of fp32 peak: "
          + ", ".join(f"{layer['id']} {100 * layer['gflops'] / peak:.0f}%" for layer in convs))
    verdict("4. every 3x3 conv of the fastest build >= 40% of fp32 peak", not low,
            "all convs" if not low else f"{len(low)} below: " + ", ".join(low))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

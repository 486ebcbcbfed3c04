#!/usr/bin/env python3
"""Check the project's speed targets on ONE result file (all builds measured in the same run).

    .venv/bin/python scripts/check_targets.py [RESULT.json]      (default: the newest result)
    .venv/bin/python scripts/check_targets.py --run [--repeats 20] [--output PATH]
                                              (measure first: `harness run` of every build,
                                               default model, local device)

Every figure is a ratio of medians taken in that one run (the machines are shared and noisy:
ratios from one run, never absolute times from separate runs). Targets:

issue 3 (the hybrid against the baseline, the UNet study's claims)
  3.1 tvm-nnpack e2e <= 0.80 x caffe2-nnpack e2e
  3.2 tvm-nnpack no slower than the faster of tvm and caffe2-nnpack on any layer, within noise
      (noise: the layer's interquartile range, relative to its median, for each build)
  3.3 the fastest build's e2e <= 1.0 x torch
  3.4 every 3x3 conv of the fastest build >= 40% of the device's fp32 peak (effective GFLOP/s)
issue 13 (against the limit and the peers)
  13.1 tvm e2e <= 1.0 x torch
  13.2 the fastest build's e2e <= 0.5 x torch
  13.3 tvm-nnpack e2e <= 0.8 x min(tvm, caffe2-nnpack)
  13.4 every 3x3 conv in tvm >= 0.9 x oneDNN's GFLOP/s on the same layer (torch's `onednn` layers)
  13.5 no direct-method layer above 100% of the measured-clock peak, beyond its noise
       (harness/report/peak_check.py)
The peak is the one the result's % of peak uses: at the measured clock where the clock is not
pinned (harness/devices/peak_basis.py). Fused layers (a pool run inside the conv before it) are
timed 0; their conv's time is the group's, so 13.4 compares a fused conv with oneDNN's conv
alone, which is the stricter comparison.
This is a benchmark report, not a test: it prints the figures and exits 1 if a target is missed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.devices.peak_basis import basis_of  # noqa: E402
from harness.report.peak_check import direct_layers_above_peak  # noqa: E402
from harness.results.store import find_results, load_result  # noqa: E402
from harness.runner.stats import summarize  # noqa: E402

ONEDNN = "onednn"  # the torch build's impl label of a conv oneDNN ran
Verdict = Callable[[str, bool, str], None]


def measure(repeats: int, output: Path | None) -> Path:
    """One `harness run` of every build on the local device with the default model (its result
    file in results/runs/local/ unless --output says otherwise)."""
    cmd = [sys.executable, "-m", "harness", "run", "--repeats", str(repeats)]
    cmd += ["--output", str(output)] if output else []
    print("$ " + " ".join(cmd), flush=True)
    code = subprocess.run(cmd, cwd=REPO).returncode
    if code:
        raise SystemExit(f"harness run exited {code}: no result to check")
    return output or newest_result()


def newest_result() -> Path:
    return max(find_results(), key=lambda p: p.stat().st_mtime)


def is_3x3(layer: dict[str, Any]) -> bool:
    return layer["op"] == "conv2d" and list(layer.get("kernel") or []) == [3, 3]


def issue3(e2e: dict[str, float], layers: dict[str, dict[str, dict[str, Any]]], peak: float,
           verdict: Verdict) -> None:
    ratio = e2e["tvm-nnpack"] / e2e["caffe2-nnpack"]
    verdict("3.1 tvm-nnpack / caffe2-nnpack e2e", ratio <= 0.80, f"{ratio:.3f} (target <= 0.80)")
    slower = []
    for lid, hybrid in layers["tvm-nnpack"].items():
        best_name = min(("tvm", "caffe2-nnpack"), key=lambda n: layers[n][lid]["median_ms"])
        best = layers[best_name][lid]
        if not best["median_ms"]:
            continue  # fused into another layer in that build: its time is in that layer's
        noise = max(summarize(hybrid["samples_ms"]).spread, summarize(best["samples_ms"]).spread)
        r = hybrid["median_ms"] / best["median_ms"]
        if r > 1 + noise:
            slower.append(f"{lid} {r:.2f}x {best_name} (noise {noise:.0%}, impl {hybrid['impl']})")
    verdict("3.2 tvm-nnpack per layer vs min(tvm, caffe2-nnpack)", not slower,
            "no layer slower beyond noise" if not slower else "; ".join(slower))
    fastest = min(e2e, key=e2e.get)
    r = e2e[fastest] / e2e["torch"]
    verdict("3.3 fastest build / torch e2e", r <= 1.0, f"{fastest}: {r:.3f} (target <= 1.0)")
    convs = [layer for layer in layers[fastest].values() if is_3x3(layer) and layer["median_ms"]]
    low = [f"{c['id']} {100 * c['gflops'] / peak:.0f}%" for c in convs if c["gflops"] < 0.40 * peak]
    print(f"     {fastest}'s 3x3 convs, % of fp32 peak: "
          + ", ".join(f"{c['id']} {100 * c['gflops'] / peak:.0f}%" for c in convs))
    verdict("3.4 every 3x3 conv of the fastest build >= 40% of fp32 peak", not low,
            "all convs" if not low else f"{len(low)} below: " + ", ".join(low))


def issue13(doc: dict[str, Any], e2e: dict[str, float], layers: dict[str, dict[str, dict[str, Any]]],
            verdict: Verdict) -> None:
    r = e2e["tvm"] / e2e["torch"]
    verdict("13.1 tvm / torch e2e", r <= 1.0, f"{r:.3f} (target <= 1.0)")
    fastest = min(e2e, key=e2e.get)
    r = e2e[fastest] / e2e["torch"]
    verdict("13.2 fastest build / torch e2e", r <= 0.5, f"{fastest}: {r:.3f} (target <= 0.5)")
    best_other = min(e2e["tvm"], e2e["caffe2-nnpack"])
    r = e2e["tvm-nnpack"] / best_other
    verdict("13.3 tvm-nnpack / min(tvm, caffe2-nnpack) e2e", r <= 0.8, f"{r:.3f} (target <= 0.8)")
    shares = []
    for lid, layer in layers["tvm"].items():
        ref = layers["torch"].get(lid)
        if is_3x3(layer) and ref and ref["impl"] == ONEDNN:
            shares.append((lid, ref["median_ms"] / layer["median_ms"]))  # tvm GFLOP/s / oneDNN GFLOP/s
    print("     tvm GFLOP/s / oneDNN GFLOP/s per 3x3 conv: " + ", ".join(f"{lid} {s:.2f}" for lid, s in shares))
    low = [f"{lid} {s:.2f}" for lid, s in shares if s < 0.9]
    verdict("13.4 every 3x3 conv in tvm >= 0.9 x oneDNN", bool(shares) and not low,
            f"{len(shares)} convs, worst {min(s for _, s in shares):.2f}" if shares and not low
            else f"{len(low)} below: " + ", ".join(low) if low else "torch ran no conv with oneDNN")
    above = direct_layers_above_peak(doc)
    verdict("13.5 no direct-method layer above 100% of the peak", not above,
            f"peak {basis_of(doc).gflops['fp32']:.1f} GFLOP/s at the {basis_of(doc).basis}" if not above
            else "; ".join(f"{a.build} {a.layer} {a.pct_peak:.0f}% ({a.impl})" for a in above))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("result", nargs="?", type=Path, help="a result file (default: the newest)")
    parser.add_argument("--run", action="store_true", help="measure every build first (harness run)")
    parser.add_argument("--repeats", type=int, default=20, help="with --run: timed passes per build (default 20)")
    parser.add_argument("--output", type=Path, help="with --run: where the result goes")
    args = parser.parse_args()
    path = measure(args.repeats, args.output) if args.run else \
        args.result or newest_result()
    doc = load_result(path)
    builds = {b["name"]: b for b in doc["builds"] if b["status"] == "ok"}
    e2e = {name: b["e2e"]["median_ms"] for name, b in builds.items()}
    peak = basis_of(doc).gflops["fp32"]
    print(f"{path}\nmodel {doc['model']['name']} on {doc['device']['name']}, "
          f"fp32 peak {peak:.1f} GFLOP/s at the {basis_of(doc).basis}")
    for name, ms in sorted(e2e.items(), key=lambda kv: kv[1]):
        print(f"  {name:14s} e2e median {ms:9.2f} ms  ({ms / e2e['torch']:.2f} x torch)" if "torch" in e2e
              else f"  {name:14s} e2e median {ms:9.2f} ms")
    missing = {"tvm-nnpack", "caffe2-nnpack", "tvm", "torch"} - set(builds)
    if missing:
        print(f"builds missing or failed in this run: {', '.join(sorted(missing))}")
        return 1
    ok = True

    def verdict(label: str, passed: bool, detail: str) -> None:
        nonlocal ok
        ok &= passed
        print(f"[{'PASS' if passed else 'MISS'}] {label}: {detail}")

    layers = {name: {layer["id"]: layer for layer in b["layers"]} for name, b in builds.items()}
    issue3(e2e, layers, peak, verdict)
    issue13(doc, e2e, layers, verdict)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

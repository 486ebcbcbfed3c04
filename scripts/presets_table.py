#!/usr/bin/env python3
"""Every preset, every build, on one device: the end-to-end medians and the speedup of each
build over caffe2-nnpack, as a markdown table (issue 12's table in the README).

    .venv/bin/python scripts/presets_table.py [--models a,b] [--builds a,b] [--repeats 10]
        [--device NAME] [--out DIR]

Each model is one `harness run` (its own process, every build in it, so the ratios of a row
come from one run), stored as an ordinary result under --out (default: a new temp dir) and
read back from that file: the table is derived from stored raw samples, never typed in. A
benchmark script, not a test: it prints the table and the result files it came from, with
each run's warnings (a busy or noisy machine) under the table.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.builds import BASELINE, build_names  # noqa: E402
from harness.model import PRESETS  # noqa: E402
from harness.results.store import load_result  # noqa: E402

FULL_SIZE = [name for name in PRESETS if not name.endswith(("-small", "-tiny"))]


def measure(model: str, builds: list[str], repeats: int, device: str | None, out: Path) -> Path:
    path = out / f"{model}.json"
    command = [sys.executable, "-m", "harness", "run", "--model", model, "--builds", ",".join(builds),
               "--repeats", str(repeats), "--output", str(path)] + (["--device", device] if device else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not path.is_file():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"{model}: harness run failed (exit {done.returncode}): {tail}")
    return path


def row(doc: dict, builds: list[str]) -> tuple[str, list[str]]:
    e2e = {b["name"]: b["e2e"]["median_ms"] for b in doc["builds"] if b["status"] == "ok" and b.get("e2e")}
    base = e2e.get(BASELINE)
    cells = []
    for name in builds:
        if name not in e2e:
            cells.append("failed")
        else:
            speedup = f" ({base / e2e[name]:.2f}x)" if base else ""
            cells.append(f"{e2e[name]:.1f}{speedup}")
    return f"`{doc['model']['name']}` ({doc['model']['total_flops'] / 1e9:.2f} GFLOPs)", cells


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(FULL_SIZE))
    ap.add_argument("--builds", default=",".join(build_names()))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    builds = [b for b in args.builds.split(",") if b]
    out = args.out or Path(tempfile.mkdtemp(prefix="presets-"))
    out.mkdir(parents=True, exist_ok=True)
    docs = []
    for model in [m for m in args.models.split(",") if m]:
        docs.append((model, load_result(measure(model, builds, args.repeats, args.device, out))))
        print(f"{model}: measured", file=sys.stderr, flush=True)
    print(f"| model | {' | '.join(builds)} |")
    print(f"|---|{'---|' * len(builds)}")
    for _, doc in docs:
        label, cells = row(doc, builds)
        print(f"| {label} | {' | '.join(cells)} |")
    print(f"\nEnd-to-end medians in ms, ({BASELINE} / build) in brackets; device "
          f"{docs[0][1]['device']['name']}, {args.repeats} repeats; results in {out}")
    for model, doc in docs:
        for b in doc["builds"]:
            if b["name"] == "qnnpack-int8" and b.get("max_rel_error") is not None:
                print(f"{model}: qnnpack-int8 max relative error against fp32 {b['max_rel_error']:.3g} "
                      f"(tolerance {b.get('tolerance', float('nan')):g})")
        for warning in doc.get("warnings", []):
            print(f"{model}: {warning}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

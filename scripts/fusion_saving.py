#!/usr/bin/env python3
"""What the TVM builds' fusion saves, per fused group, measured on this machine (issue 13 item 4).

    .venv/bin/python scripts/fusion_saving.py [--model unet] [--build tvm] [--device local]
        [--rounds 6] [--repeats 3] [--warmup 1] [--tuning-dir DIR] [--output FILE.json]

Compiles the build twice in ONE process, with every fusion ({"fuse": "all"}) and with none, checks
both against the PyTorch reference, then measures them interleaved: --rounds rounds, each
measuring both (the order alternating) with the runner's own loop (harness.runner.measure:
--warmup warm-up passes, then --repeats plain and per-layer timed passes). Per conv that
took layers in (harness/builds/tvm_fusion.py) it prints the medians of all samples: the
unfused conv's time plus the absorbed layers' times against the fused kernel's, the saving
in ms and %, whether the change is significant by the nightly's own test (harness.history.
compare_samples: Mann-Whitney U on the fused kernel's samples against the per-pass sums of
the unfused layers, p < 0.01 and at least 5 %), and the whole network's end-to-end medians.
Also how much of the machine other processes used meanwhile (harness.devices.state): on a
shared machine that is the noise.

A benchmark, not a test. `--model unet-tiny --rounds 2 --repeats 2` checks it in seconds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, as the other scripts

from harness.builds import get_build  # noqa: E402
from harness.builds.base import BuildContext, relative_error  # noqa: E402
from harness.devices import load_devices  # noqa: E402
from harness.devices.state import collect_cpu_seconds, other_cpu_share  # noqa: E402
from harness.history import compare_samples  # noqa: E402
from harness.model import get_model  # noqa: E402
from harness.model.layers import LayerTable  # noqa: E402
from harness.model.weights import make_input, make_weights  # noqa: E402
from harness.runner.allocator import keep_heap  # noqa: E402
from harness.runner.measure import Settings, measure  # noqa: E402
from harness.runner.run import reference_output  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("fused", "unfused")


@dataclass
class Pooled:
    """One variant's samples over all rounds (ns)."""

    e2e: list[int] = field(default_factory=list)
    layers: dict[str, list[int]] = field(default_factory=dict)

    def add(self, e2e: list[int], layers: dict[str, list[int]]) -> None:
        self.e2e += e2e
        for lid, ns in layers.items():
            self.layers.setdefault(lid, []).extend(ns)

    def ms(self, layer_id: str) -> float:
        return statistics.median(self.layers[layer_id]) / 1e6

    def pass_sums_ms(self, layer_ids: list[str]) -> list[float]:
        """Per timed pass, the layers' times added up (their samples are aligned by pass)."""
        return [sum(ns) / 1e6 for ns in zip(*(self.layers[lid] for lid in layer_ids))]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="unet")
    p.add_argument("--build", default="tvm", choices=["tvm", "tvm-nnpack"])
    p.add_argument("--device", default="local")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per variant per round")
    p.add_argument("--warmup", type=int, default=1, help="warm-up passes per variant per round")
    p.add_argument("--tuning-dir", type=Path, default=None, help="tuning databases (default: the checkout's)")
    p.add_argument("--output", type=Path, default=None, help="write the raw samples here (JSON)")
    return p.parse_args(argv)


def compile_variants(table: LayerTable, weights, device, args: argparse.Namespace) -> dict[str, Any]:
    """Both executables, each checked against the reference before anything is timed."""
    base = {"tuning_dir": str(args.tuning_dir)} if args.tuning_dir else {}
    build = get_build(args.build)
    x = make_input(table)
    ref = reference_output(table, weights, x)
    exes = {}
    for variant in VARIANTS:
        ctx = BuildContext(table, weights, device, {**base, "fuse": variant == "fused"}, device.cores)
        exes[variant] = build.compile(ctx)
        error = relative_error(exes[variant].run(x), ref)
        if error > build.tolerance:
            raise SystemExit(f"{variant}: output off the reference ({error:.3g} > {build.tolerance:.3g})")
        print(f"{variant}: compiled, max relative error {error:.2g}", flush=True)
    return exes


def measure_interleaved(exes: dict[str, Any], x, args: argparse.Namespace) -> tuple[dict[str, Pooled], float | None]:
    """Rounds of both variants, the order alternating; and the share of the CPUs others used."""
    pooled = {v: Pooled() for v in VARIANTS}
    settings = Settings(args.warmup, args.repeats)
    before = {"cpu_seconds": collect_cpu_seconds()}
    for r in range(args.rounds):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            samples = measure(exes[variant], x, settings)
            pooled[variant].add(samples.e2e_ns, samples.layers_ns)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    return pooled, other_cpu_share(before, {"cpu_seconds": collect_cpu_seconds()})


def group_rows(table: LayerTable, fused_exe: Any, pooled: dict[str, Pooled]) -> list[dict[str, Any]]:
    """Per conv that took layers in: unfused conv + absorbed layers vs the fused kernel (ms)."""
    groups: dict[str, list[str]] = {}
    for lid, conv in fused_exe.absorbed.items():
        groups.setdefault(conv, []).append(lid)
    rows = []
    for conv in (lid for lid in table.ids if lid in groups):
        fused, unfused = pooled["fused"], pooled["unfused"]
        before = unfused.ms(conv) + sum(unfused.ms(lid) for lid in groups[conv])
        after = fused.ms(conv)
        change = compare_samples(unfused.pass_sums_ms([conv, *groups[conv]]), fused.pass_sums_ms([conv]))
        rows.append({"conv": conv, "absorbed": groups[conv], "unfused_conv_ms": unfused.ms(conv),
                     "unfused_absorbed_ms": {lid: unfused.ms(lid) for lid in groups[conv]},
                     "unfused_ms": before, "fused_ms": after, "saving_ms": before - after,
                     "saving_pct": 100 * (before - after) / before, "fused_impl": fused_exe.impl(conv),
                     "verdict": change.verdict, "p_value": change.p_value})
    return rows


def print_report(rows: list[dict[str, Any]], pooled: dict[str, Pooled], others: float | None,
                 notes: list[str], args: argparse.Namespace) -> None:
    n = len(pooled["fused"].e2e)
    print(f"\n{args.build} on {args.model}, {args.device}: medians of {n} samples per variant "
          f"({args.rounds} interleaved rounds x {args.repeats}, {args.warmup} warm-up(s) per round)")
    if others is not None:
        print(f"other processes used {100 * others:.0f}% of the CPUs meanwhile")
    head = f"{'conv group':<34} {'unfused conv':>12} {'+ absorbed':>10} {'= unfused':>9} {'fused':>8} " \
           f"{'saving':>8} {'%':>6}  {'fused is (p)':<14}"
    print(head + "\n" + "-" * len(head))
    for row in rows:
        name = f"{row['conv']} (+{', '.join(row['absorbed'])})"
        print(f"{name:<34} {row['unfused_conv_ms']:>12.3f} {sum(row['unfused_absorbed_ms'].values()):>10.3f} "
              f"{row['unfused_ms']:>9.3f} {row['fused_ms']:>8.3f} {row['saving_ms']:>8.3f} {row['saving_pct']:>5.1f}%  "
              f"{row['verdict']} ({row['p_value']:.2g})")
    total_before, total_after = sum(r["unfused_ms"] for r in rows), sum(r["fused_ms"] for r in rows)
    print(f"{'all groups':<34} {'':>12} {'':>10} {total_before:>9.3f} {total_after:>8.3f} "
          f"{total_before - total_after:>8.3f} {100 * (total_before - total_after) / total_before:>5.1f}%")
    e2e = {v: statistics.median(pooled[v].e2e) / 1e6 for v in VARIANTS}
    print(f"end to end: unfused {e2e['unfused']:.3f} ms, fused {e2e['fused']:.3f} ms, saving "
          f"{e2e['unfused'] - e2e['fused']:.3f} ms ({100 * (e2e['unfused'] - e2e['fused']) / e2e['unfused']:.1f}%)")
    for note in notes:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keep_heap()  # as `harness run` does, before anything large is allocated
    table = get_model(args.model)
    device = load_devices(REPO / "devices.yaml").get(args.device)
    weights = make_weights(table)
    exes = compile_variants(table, weights, device, args)
    pooled, others = measure_interleaved(exes, make_input(table), args)
    rows = group_rows(table, exes["fused"], pooled)
    notes = [n for n in exes["fused"].notes if "fused" in n or "refitted" in n or "tuning database" in n]
    print_report(rows, pooled, others, notes, args)
    if args.output:
        args.output.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "groups": rows,
                                           "other_cpu_share": others,
                                           "samples_ns": {v: {"e2e": pooled[v].e2e, "layers": pooled[v].layers}
                                                          for v in VARIANTS}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

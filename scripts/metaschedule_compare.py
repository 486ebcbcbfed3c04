#!/usr/bin/env python3
"""MetaSchedule against the `tvm` build's conv template, per conv workload, on this machine.

    .venv/bin/python scripts/metaschedule_compare.py [--model unet] [--layers ID,ID,...|all]
        [--trials 64] [--per-iter 16] [--top-k 3] [--rounds 5] [--build-timeout 120]
        [--run-timeout 60] [--build-workers 2] [--seed 0] [--database PATH]
        [--work-dir DIR [--retime-only]] [--out FILE]

For each chosen workload (default, for unet: enc1.conv2 64->64 at 128x128, enc3.conv2 256->256
at 32x32, mid.conv2 512->512 at 16x16; `--layers all`: every distinct conv workload; a layer id
stands for its workload), on the layer's PrimFunc exactly as the network has it (conv + bias
[+ ReLU], harness.builds.tvm_common.layer_primfunc):

1. MetaSchedule's own search (`tvm.s_tir.meta_schedule.tune_tir`: post-order-apply design
   space, evolutionary search in rounds of --per-iter candidates, XGBoost cost model) for
   --trials candidates, built by a LocalBuilder with --build-workers processes and a
   --build-timeout of 120 s rather than MetaSchedule's 30 s (on two shared cores a candidate's
   LLVM build takes 2-6 s on average but over 20 s at times) and run by a LocalRunner;
2. its --top-k best records (by MetaSchedule's own timing) re-timed and checked with the
   template's timer and checker (harness.tuning.tasks: conv_data, the PyTorch reference,
   LOCAL.tvm_kernel: 5 samples of >= 20 ms, output within 1e-4 of PyTorch's); the winner is
   the one with the lowest sample, as in the tuning database;
3. the template's best from this CPU's `tvm-conv2d` tuning database (--database: another
   file), the median of its stored raw samples;
4. head to head: both winners timed now, alternately, --rounds times each. When other work
   holds one of the two cores, a kernel parallel over both takes about twice as long, for a
   round or part of one, so each side's figure is its quietest round's median (every round's
   samples are in the JSON).

Printed per workload: MetaSchedule's median ms and GFLOP/s (layer.flops) from step 4, the
template's from the database and from step 4, the ratios MetaSchedule / template (> 1:
MetaSchedule slower; "MS/tmpl now" is the one of step 4, which the `faster` column judges
with a 5 % margin), MetaSchedule's tuning wall time, its trials and failures (build errors,
run errors, timeouts, read from its logs). --out FILE writes all of it as JSON, with the
winning MetaSchedule trace. MetaSchedule's work (its JSON database and logs/, one folder per
workload) is kept in --work-dir, else in a temporary folder removed at the end; with
--retime-only the searches kept in --work-dir are re-timed without searching again (a few
seconds per workload: to measure again on a quieter machine). If MetaSchedule finds nothing
that builds, runs and passes the check, the workload says so. Nothing of the harness changes.

This is a benchmark, not a test. `--layers mid.conv2 --trials 4 --per-iter 4 --top-k 1`
checks that it works in about a minute.

Found on this machine (AMD EPYC Zen 5, znver5-avx512, 2 cores shared with other work; TVM
0.27.0.post1). Searches (`--trials 64 --work-dir W64`, then `--layers enc3.conv2 --trials 128
--work-dir W128` and the same for mid.conv2) ran while other work loaded the machine; the
figures are from `--retime-only --rounds 10` on each work dir with the machine quiet, against
tuning/local/znver5-avx512/tvm-conv2d.json as re-tuned with the register-aware search space
(sha256 8ccd903df879a64d). Medians, MetaSchedule vs the template, time ratio, search wall time:
    64 trials   enc1.conv2  64->64 @128x128  2.648 ms (456 GFLOP/s)  2.332 ms (518)  1.14  264 s
                enc3.conv2 256->256 @32x32   4.606 ms (262 GFLOP/s)  2.302 ms (525)  2.00  248 s
                mid.conv2  512->512 @16x16   2.754 ms (439 GFLOP/s)  2.293 ms (527)  1.20  195 s
    128 trials  enc3.conv2 256->256 @32x32   2.468 ms (489 GFLOP/s)  2.368 ms (510)  1.04  461 s
                mid.conv2  512->512 @16x16   2.749 ms (439 GFLOP/s)  2.355 ms (513)  1.17  531 s
MetaSchedule never won by a clear margin: the template stays. All 448 candidates built and ran
(no timeout at 120 s; batches of 16 built in 20-47 s on two workers: 50-60 % of the search
time, measuring 10-20 %, the evolutionary search and cost model the rest). The result varies
with the search: enc3.conv2 at 4.6 ms after 64 trials, 2.5 ms after 128. Against the database
before that re-tune (winners of at most 14 accumulators, ~2.6 ms each) the 64-trial enc1.conv2
and mid.conv2 kernels tied (within 5 %).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.errors import UserError  # noqa: E402
from harness.model.layers import Layer, LayerTable  # noqa: E402

KIND = "tvm-conv2d"
TOLERANCE = 1e-4  # the template's candidates are checked to this (harness.tuning.tasks)
DEFAULT_LAYERS = ("enc1.conv2", "enc3.conv2", "mid.conv2")  # 64->64 @128, 256->256 @32, 512->512 @16
FAILED_SECS = 1e9  # MetaSchedule stores a candidate that failed to build or run with run_secs 1e10
MS_LOGGER = "tvm.s_tir.meta_schedule"
WALL_FILE = "search_wall.json"  # written beside MetaSchedule's database: how long its search took


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="unet")
    p.add_argument("--layers", default=",".join(DEFAULT_LAYERS),
                   help="comma list of conv layer ids (each stands for its workload), or 'all'")
    p.add_argument("--trials", type=int, default=64, help="MetaSchedule candidates measured per workload")
    p.add_argument("--per-iter", type=int, default=16, help="candidates per search round (num_trials_per_iter)")
    p.add_argument("--top-k", type=int, default=3, help="MetaSchedule's best records re-timed with the harness timer")
    p.add_argument("--build-timeout", type=float, default=120.0, help="seconds per candidate build")
    p.add_argument("--run-timeout", type=float, default=60.0, help="seconds per candidate run")
    p.add_argument("--build-workers", type=int, default=2, help="parallel candidate builds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--database", type=Path, help="template tuning database (default: this CPU's tvm-conv2d.json)")
    p.add_argument("--rounds", type=int, default=5,
                   help="alternate timings of both winners at the end (0: MetaSchedule's top-k timing only, "
                        "the template's figure from the database only)")
    p.add_argument("--work-dir", type=Path,
                   help="keep MetaSchedule's databases and logs here (one folder per workload)")
    p.add_argument("--out", type=Path, help="write the figures as JSON")
    p.add_argument("--retime-only", action="store_true",
                   help="no search: re-time the searches an earlier run kept in --work-dir")
    args = p.parse_args(argv)
    for name in ("trials", "per_iter", "top_k", "build_workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.rounds < 0:
        p.error("--rounds must be at least 0")
    if args.retime_only and not args.work_dir:
        p.error("--retime-only needs the --work-dir of the run whose searches it re-times")
    return args


def choose_layers(table: LayerTable, spec: str) -> list[Layer]:
    """The first layer of each workload asked for, in table order."""
    from harness.tuning.tasks import unique_conv_layers  # noqa: PLC0415

    unique = unique_conv_layers(table)
    if spec.strip() == "all":
        return unique
    convs = {layer.id: layer for layer in table.convs}
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [i for i in ids if i not in convs]
    if unknown or not ids:
        raise UserError(f"no conv layer {unknown[0] if unknown else spec!r} in {table.config.name}; "
                        f"its conv layers: {', '.join(convs)} (or --layers all)")
    wanted = {convs[i].workload_key() for i in ids}
    return [layer for layer in unique if layer.workload_key() in wanted]


def shape_label(layer: Layer) -> str:
    _, c_in, h, w = layer.in_shape
    return f"{c_in}->{layer.out_channels} @{h}x{w}" + (f" g{layer.groups}" if layer.groups != 1 else "")


def gflops(layer: Layer, ms: float | None) -> float | None:
    return layer.flops / (ms * 1e6) if ms else None


def summary(samples: list[float]) -> dict[str, Any]:
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "samples_ms": samples}


# --- MetaSchedule ----------------------------------------------------------------------------

def tune_metaschedule(func, target, work_dir: Path, args: argparse.Namespace, cores: int):
    """Run MetaSchedule's search; returns (its database, wall seconds)."""
    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    # tune_tir's loggers print at the level the package logger has: warnings only on the
    # console; work_dir/logs/ gets everything. (Set before every call: the logging setup of
    # one tune_tir call leaves the package logger at DEBUG.)
    logging.getLogger(MS_LOGGER).setLevel(logging.WARNING)
    start = time.monotonic()
    database = ms.tune_tir(
        func, target, str(work_dir), max_trials_global=args.trials,
        num_trials_per_iter=min(args.per_iter, args.trials),
        builder=ms.builder.LocalBuilder(max_workers=args.build_workers, timeout_sec=args.build_timeout),
        runner=ms.runner.LocalRunner(timeout_sec=args.run_timeout),
        num_tuning_cores=cores, seed=args.seed)
    return database, time.monotonic() - start


def earlier_search(work_dir: Path):
    """An earlier run's MetaSchedule database in work_dir (--retime-only), and its wall time."""
    from tvm.s_tir import meta_schedule as ms  # noqa: PLC0415

    if not (work_dir / "database_tuning_record.json").is_file():
        raise UserError(f"--retime-only: no MetaSchedule database in {work_dir}")
    wall = None
    if (work_dir / WALL_FILE).is_file():
        wall = json.loads((work_dir / WALL_FILE).read_text())["tune_wall_s"]
    else:  # from the log's first and last timestamps
        stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ", "".join(
            p.read_text(errors="replace") for p in (work_dir / "logs").glob("*task_scheduler.log")), re.M)
        if stamps:
            first, last = (time.mktime(time.strptime(t, "%Y-%m-%d %H:%M:%S")) for t in (min(stamps), max(stamps)))
            wall = last - first
    return ms.database.JSONDatabase(work_dir=str(work_dir), allow_missing=False), wall


def log_failures(work_dir: Path) -> dict[str, int]:
    """Failed candidates as the task's log tells them (the database only says 'failed')."""
    text = "".join(p.read_text(errors="replace") for p in sorted((work_dir / "logs").glob("*task_*.log")))
    return {"build_errors": len(re.findall(r"Error in building", text)),
            "run_errors": len(re.findall(r"Error in running", text)),
            "timeouts": len(re.findall(r"Timeout, killed after", text))}


def metaschedule_side(layer: Layer, func, target, data, work_dir: Path, args: argparse.Namespace,
                      cores: int) -> tuple[dict[str, Any], Any]:
    """Search, then re-time MetaSchedule's top-k with the harness's timer and checker.
    Returns the figures and the winner's scheduled PrimFunc (None if nothing valid)."""
    import tvm  # noqa: PLC0415

    from harness.tuning.tasks import LOCAL  # noqa: PLC0415

    out: dict[str, Any] = {"work_dir": str(work_dir)}
    if args.retime_only:
        database, wall = earlier_search(work_dir)
    else:
        try:
            database, wall = tune_metaschedule(func, target, work_dir, args, cores)
        except Exception as exc:  # noqa: BLE001 - MetaSchedule failing is a finding, not a crash
            out.update(log_failures(work_dir) if (work_dir / "logs").is_dir() else {})
            out["error"] = f"MetaSchedule's search failed: {type(exc).__name__}: {str(exc).strip()[:400]}"
            return out, None
        (work_dir / WALL_FILE).write_text(json.dumps({"tune_wall_s": wall}) + "\n")
    out["tune_wall_s"] = wall
    records = list(database.get_all_tuning_records())
    runs = [[float(s) for s in r.run_secs] if r.run_secs is not None else [] for r in records]
    valid = sorted((statistics.fmean(s), i) for i, s in enumerate(runs) if s and max(s) < FAILED_SECS)
    out.update(trials=len(records), valid=len(valid), **log_failures(work_dir))
    if not valid:
        out["error"] = (f"MetaSchedule found nothing valid: {len(records)} candidates measured, none built and ran "
                        f"(build errors {out['build_errors']}, run errors {out['run_errors']}, "
                        f"timeouts {out['timeouts']}; logs in {work_dir / 'logs'})")
        return out, None
    out["own_best_ms"] = valid[0][0] * 1e3  # MetaSchedule's own measurement of its best
    retimed, funcs = [], {}
    for rank, (_, i) in enumerate(valid[: args.top_k]):
        entry: dict[str, Any] = {"rank": rank, "own_ms": statistics.fmean(runs[i]) * 1e3}
        try:
            sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
            records[i].trace.apply_to_schedule(sch, remove_postproc=False)
            entry.update(summary(LOCAL.tvm_kernel(sch.mod["main"], target, data, "float32", TOLERANCE)))
            funcs[rank] = (sch.mod["main"], str(records[i].trace))
        except Exception as exc:  # noqa: BLE001 - wrong or failing output: recorded, not counted
            entry["error"] = f"{type(exc).__name__}: {str(exc).strip()[:400]}"
        retimed.append(entry)
    out["top_k"] = retimed
    ok = [e for e in retimed if "error" not in e]
    if not ok:
        out["error"] = (f"MetaSchedule found nothing valid: its {len(retimed)} best failed the harness's "
                        f"build or check ({retimed[0]['error']})")
        return out, None
    best = min(ok, key=lambda e: e["min_ms"])
    winner, out["trace"] = funcs[best["rank"]]
    out["best_rank"] = best["rank"]
    out.update(summary(best["samples_ms"]), gflops=gflops(layer, best["median_ms"]))
    return out, winner


def template_side(layer: Layer, func, db) -> tuple[dict[str, Any], Any]:
    """The template's best from the database; returns the figures and its scheduled PrimFunc."""
    from harness.builds.tvm_common import schedule_primfunc  # noqa: PLC0415
    from harness.builds.tvm_pure import schedule_any_conv  # noqa: PLC0415
    from harness.tuning import conv_grouped  # noqa: PLC0415
    from harness.tuning.conv_direct import ConvParams  # noqa: PLC0415

    record = db.records.get(layer.workload_key())
    best = record.best() if record else None
    if best is None:
        why = "no record" if record is None else "no valid candidate"
        return {"error": f"the tuning database has {why} for this workload ({db.path})"}, None
    median = record.best_median_ms()
    out: dict[str, Any] = {"params": best.params, "median_ms": median, "min_ms": min(best.samples_ms),
                           "samples_ms": best.samples_ms, "gflops": gflops(layer, median),
                           "measured": len(record.candidates), "space_size": record.space_size,
                           "updated_utc": record.updated_utc}
    params = (conv_grouped.GroupedParams.from_json(best.params) if layer.groups > 1
              else ConvParams.from_json(best.params))
    try:
        return out, schedule_primfunc(func, lambda sch: schedule_any_conv(sch, params))
    except Exception as exc:  # noqa: BLE001
        out["now"] = {"error": f"the template's winner no longer schedules: {type(exc).__name__}: {exc}"}
        return out, None


def head_to_head(layer: Layer, ms_func, tm_func, target, data, rounds: int, ms: dict[str, Any],
                 tm: dict[str, Any]) -> None:
    """Both winners timed now, alternately, `rounds` times each. While other work holds one of
    the two cores, a kernel parallel over both takes about twice as long, for a round or for
    part of one; so each side's figure is its quietest round (lowest median): its median and
    its 5 samples, every round's samples kept beside it. MetaSchedule's figures become these;
    the template's go under tm["now"]."""
    from harness.tuning.tasks import compile_kernel, time_compiled  # noqa: PLC0415

    ms_rounds: list[list[float]] = []
    tm_rounds: list[list[float]] = []
    try:
        ms_kernel, tm_kernel = compile_kernel(ms_func, target), compile_kernel(tm_func, target)  # once, not per round
        for _ in range(rounds):
            ms_rounds.append(time_compiled(ms_kernel, data, "float32", TOLERANCE))
            tm_rounds.append(time_compiled(tm_kernel, data, "float32", TOLERANCE))
    except Exception as exc:  # noqa: BLE001
        tm["now"] = {"error": f"head-to-head timing failed: {type(exc).__name__}: {str(exc).strip()[:400]}"}
        return
    ms["selection_samples_ms"] = ms["samples_ms"]
    ms.update(quietest(layer, ms_rounds))
    tm["now"] = quietest(layer, tm_rounds)


def quietest(layer: Layer, rounds: list[list[float]]) -> dict[str, Any]:
    best = min(rounds, key=statistics.median)
    return {**summary(best), "min_ms": min(min(r) for r in rounds), "gflops": gflops(layer, statistics.median(best)),
            "rounds_ms": rounds}


# --- report ----------------------------------------------------------------------------------

def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "median_ms") -> float | None:
    """MetaSchedule's time over the template's (> 1: MetaSchedule slower)."""
    if not a or not b or key not in a or key not in b:
        return None
    return a[key] / b[key]


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_table(rows: list[dict[str, Any]], console) -> None:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="MetaSchedule vs the conv template (medians; ratio > 1: MetaSchedule slower)",
                  title_justify="left")
    for col in ("layer", "workload", "MS ms", "MS GFLOP/s", "tmpl ms (db)", "tmpl GFLOP/s", "MS/tmpl",
                "tmpl ms (now)", "MS/tmpl now", "MS tune s", "trials ok/all", "fail b/r/t", "faster"):
        table.add_column(col, justify="left" if col in ("layer", "workload", "faster") else "right")
    for row in rows:
        ms, tm = row["metaschedule"], row["template"]
        now = tm.get("now") or {}
        table.add_row(row["layer"], row["shape"], fmt(ms.get("median_ms"), ".3f"), fmt(ms.get("gflops"), ".1f"),
                      fmt(tm.get("median_ms"), ".3f"), fmt(tm.get("gflops"), ".1f"), fmt(row["ratio_db"], ".2f"),
                      fmt(now.get("median_ms"), ".3f"), fmt(row["ratio_now"], ".2f"),
                      fmt(ms.get("tune_wall_s"), ".0f"),
                      f"{ms.get('valid', '-')}/{ms.get('trials', '-')}",
                      "/".join(str(ms.get(k, "-")) for k in ("build_errors", "run_errors", "timeouts")),
                      row["verdict"])
    console.print(table)
    for row in rows:
        for side in ("metaschedule", "template"):
            if "error" in row[side]:
                console.print(f"{row['layer']}: {row[side]['error']}", markup=False)
        if "error" in (row["template"].get("now") or {}):
            console.print(f"{row['layer']}: template re-timing failed: {row['template']['now']['error']}",
                          markup=False)


def verdict(row: dict[str, Any], margin: float = 0.05) -> str:
    """Which is faster, by the head-to-head ratio where there is one (quietest rounds' medians)."""
    r = row["ratio_now"] if row["ratio_now"] is not None else row["ratio_db"]
    if r is None:
        return "no comparison"
    if r < 1 - margin:
        return f"MetaSchedule {1 / r:.2f}x"
    if r > 1 + margin:
        return f"template {r:.2f}x"
    return f"neither (within {margin:.0%})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console  # noqa: PLC0415

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    try:
        return run(args, console)
    except UserError as exc:
        console.print(f"error: {exc}", style="red", markup=False)
        return 2


def run(args: argparse.Namespace, console) -> int:
    import tvm  # noqa: PLC0415

    from harness.builds.tvm_common import layer_primfunc, make_target, target_dict  # noqa: PLC0415
    from harness.devices import load_devices  # noqa: PLC0415
    from harness.model import get_model  # noqa: PLC0415
    from harness.tuning.cpukey import cpu_key  # noqa: PLC0415
    from harness.tuning.database import database_path, read_database  # noqa: PLC0415
    from harness.tuning.tasks import conv_data  # noqa: PLC0415

    device = load_devices().get("local")
    table = get_model(args.model)
    layers = choose_layers(table, args.layers)
    target = make_target(device)
    db_path = args.database or database_path(device, KIND)
    db = read_database(db_path, KIND, device.name, target_dict(device))
    if db.sha256 is None:
        console.print(f"no template database at {db_path}: template figures will be missing", style="yellow",
                      markup=False)
    if args.work_dir and not args.retime_only:
        taken = [layer.id for layer in layers if any((args.work_dir / layer.workload_key()).glob("*"))]
        if taken:
            raise UserError(f"{args.work_dir} already holds MetaSchedule work for {', '.join(taken)}: "
                            "remove it or choose another --work-dir")
    tmp = None if args.work_dir else tempfile.TemporaryDirectory(prefix="metaschedule-")
    root = args.work_dir or Path(tmp.name)  # type: ignore[union-attr]
    search = "earlier MetaSchedule searches re-timed" if args.retime_only else f"{args.trials} MetaSchedule trials each"
    console.print(f"{len(layers)} workload(s) of {args.model}, {search}, "
                  f"target {target_dict(device)}, CPU {cpu_key(device).name}; template database {db_path}; "
                  f"MetaSchedule work in {root}{' (temporary)' if tmp else ''}", markup=False)
    started = time.monotonic()
    load_before = os.getloadavg()
    rows = []
    try:
        for layer in layers:
            step = "MetaSchedule's best re-timed" if args.retime_only else "MetaSchedule search"
            console.print(f"[{layer.id}] {shape_label(layer)}: {step} ...", markup=False)
            func = layer_primfunc(layer, "float32", target)
            data = conv_data(layer)
            work_dir = root / layer.workload_key()
            if not args.retime_only:
                work_dir.mkdir(parents=True, exist_ok=True)
            ms, ms_func = metaschedule_side(layer, func, target, data, work_dir, args, device.cores)
            tm, tm_func = template_side(layer, func, db)
            if ms_func is not None and tm_func is not None and args.rounds:
                console.print(f"[{layer.id}] both winners timed {args.rounds} times, alternately ...", markup=False)
                head_to_head(layer, ms_func, tm_func, target, data, args.rounds, ms, tm)
            row = {"layer": layer.id, "workload": layer.workload_key(), "shape": shape_label(layer),
                   "flops": layer.flops, "metaschedule": ms, "template": tm,
                   "ratio_db": ratio(ms, tm), "ratio_now": ratio(ms, tm.get("now")),
                   "ratio_now_min": ratio(ms, tm.get("now"), "min_ms"), "loadavg": os.getloadavg()}
            row["verdict"] = verdict(row)
            rows.append(row)
            console.print(f"[{layer.id}] MetaSchedule {fmt(ms.get('median_ms'), '.3f')} ms "
                          f"({fmt(ms.get('gflops'), '.1f')} GFLOP/s) after {fmt(ms.get('tune_wall_s'), '.0f')} s; "
                          f"template {fmt(tm.get('median_ms'), '.3f')} ms (db), "
                          f"{fmt((tm.get('now') or {}).get('median_ms'), '.3f')} ms (now): {row['verdict']}",
                          markup=False)
            if "error" in ms:
                console.print(f"[{layer.id}] {ms['error']}", style="yellow", markup=False)
    finally:
        if rows:
            print_table(rows, console)
        doc = {"script": "scripts/metaschedule_compare.py", "model": args.model, "device": device.name,
               "cpu_key": cpu_key(device).name, "target": target_dict(device), "tvm": tvm.__version__,
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "template_database": {"path": str(db_path), "sha256": db.sha256},
               "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
               "wall_s": time.monotonic() - started, "workloads": rows}
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(doc, indent=1) + "\n")
            console.print(f"figures written to {args.out}", markup=False)
        if tmp:
            tmp.cleanup()
    console.print(f"total wall time {time.monotonic() - started:.0f} s; load average "
                  f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after", markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

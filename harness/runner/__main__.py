"""The on-device runner: `python -m harness.runner --request request.json [--output result.json]`.

Reads a JSON request, runs harness.runner.run.run() (the same code as a local run) and writes
the run's JSON output. Progress goes to stderr as JSON lines {"progress": [build, phase, done,
total]}, which the host turns into its progress bars; a problem that stops the run is one line
{"error": "..."} and exit status 3. JSON only, never pickle.

Each build runs in a child process of its own (harness.runner.isolate): `--only BUILD
--reference REF.npy` is that child, which writes the one build's record.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.runner.deps import missing_message, missing_required

EXIT_ERROR = 3


def emit(obj: dict) -> None:
    sys.stderr.write(json.dumps(obj) + "\n")
    sys.stderr.flush()


def progress(build: str, phase: str, done: int, total: int) -> None:
    emit({"progress": [build, phase, done, total]})


def write_output(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, output)  # the host never fetches half a file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.runner", description=__doc__.splitlines()[0])
    parser.add_argument("--request", type=Path, required=True, help="the JSON request file")
    parser.add_argument("--output", type=Path, default=None, help="result JSON file (default: stdout)")
    parser.add_argument("--only", default=None, metavar="BUILD", help="run this one build here (the child process)")
    parser.add_argument("--reference", type=Path, default=None, help="the reference output .npy (with --only)")
    args = parser.parse_args(argv)
    missing = missing_required()
    if missing:
        emit({"error": missing_message(missing[0], sys.executable)})
        return EXIT_ERROR
    try:
        doc = json.loads(args.request.read_text())
    except (OSError, ValueError) as exc:
        emit({"error": f"cannot read the request {args.request}: {exc}"})
        return EXIT_ERROR
    from harness.errors import UserError  # noqa: PLC0415
    from harness.runner.request import request_from_json  # noqa: PLC0415
    from harness.runner.run import run, run_one  # noqa: PLC0415

    try:
        request = request_from_json(doc, base=args.request.resolve().parent)
    except (UserError, KeyError, TypeError) as exc:
        emit({"error": f"bad request {args.request}: {exc}"})
        return EXIT_ERROR
    stdout, sys.stdout = sys.stdout, sys.stderr  # keep stdout for the result alone
    try:
        if args.only:
            output = run_one(request, args.only, args.reference, progress)
        else:
            output = run(request, progress, request_file=args.request.resolve())
    finally:
        sys.stdout = stdout
    write_output(json.dumps(output) + "\n", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A board of the farm: TVM's RPC server plus the harness's functions.

    python -m harness.farm.server --tracker HOST:PORT --key rasp3b [--port 9090] [--name NAME]

It registers with the tracker under the key; the tracker gives it to one client at a time,
and the server serves one session at a time. Without --tracker it serves whoever connects
(with --secret-from-env, whoever presents the secret): `harness tune` over SSH starts it so,
on the board's 127.0.0.1, behind an SSH port forward.
Each session (a fresh process forked from the server) can call
  harness.run_request(request JSON) -> run output JSON   (harness.runner.run.run, as any run)
  harness.probe() -> probe JSON                           (what `harness devices check` shows)
  harness.tune_nnpack(spec JSON, x, w, b, out) -> samples JSON (one hybrid NNPACK candidate,
      written into out for the host to verify; harness.tuning.remote)
  harness.deadline(seconds)                               (this session's process ends then)
JSON strings (and tensors) in and out, never pickle. --session-log appends one JSON line per request with
its enter and exit times (the tests use it to show a board never runs two measurements).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

NAME_ENV = "HARNESS_FARM_BOARD"
LOG_ENV = "HARNESS_FARM_SESSION_LOG"
SECRET_ENV = "HARNESS_FARM_SECRET"
PRELOAD_ENV = "HARNESS_FARM_PRELOAD_NNPACK"


def _log(event: dict) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"board": os.environ.get(NAME_ENV), "pid": os.getpid(), **event}) + "\n")


def _place_uploads(base: Path, files: dict[str, str]) -> None:
    """tvm.rpc.server.upload writes flat names into the session's directory; move them into
    the artifacts/<build>/ layout the runner expects."""
    for dest, uploaded in files.items():
        target = (base / dest).resolve()
        if base.resolve() not in target.parents:
            raise ValueError(f"artifact path {dest!r} leaves the session directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(base / uploaded), target)


def run_request(request_json: str) -> str:
    import tvm_ffi  # noqa: PLC0415

    from harness.runner.request import request_from_json  # noqa: PLC0415
    from harness.runner.run import run  # noqa: PLC0415

    enter = time.time()
    doc = json.loads(request_json)
    base = Path(tvm_ffi.get_global_func("tvm.rpc.server.workpath")("."))
    _place_uploads(base, doc.get("files") or {})
    request_file = base / "request.json"  # each build runs in a process of its own, from this
    request_file.write_text(json.dumps(doc))
    output = run(request_from_json(doc, base=base), request_file=request_file)
    output["board"] = os.environ.get(NAME_ENV)
    _log({"builds": doc["builds"], "enter": enter, "exit": time.time()})
    return json.dumps(output)


def probe_json() -> str:
    from harness.devices.probe import probe  # noqa: PLC0415

    return json.dumps(probe())


def tune_nnpack(spec_json: str, x: Any, w: Any, b: Any, out: Any) -> str:
    import numpy as np  # noqa: PLC0415

    from harness.builds.tvm_nnpack import time_nnpack_conv  # noqa: PLC0415 - needs the board's libtorch_cpu

    result = np.zeros(out.shape, dtype=np.float32)
    samples = time_nnpack_conv(json.loads(spec_json), x.numpy(), w.numpy(), b.numpy(), result)
    out.copyfrom(result)
    return json.dumps(samples)


def deadline(seconds: float) -> None:
    """End this session's process `seconds` from now, whatever it is doing then, with status 0.

    Not TVM's session timeout: that writes its error message into the connection while the
    session may still be writing there, and the client read the mix as a packet length
    (std::length_error in a destructor, which aborted `harness tune`). Here the server just
    closes the connection, and the client reads an end of file. Status 0: TVM's server stops
    serving for good when a session ends otherwise (so not SIGALRM's default action). A
    thread, not a signal handler: Python runs those in the main thread only between
    bytecodes, and that thread may be inside a kernel; TVM's server loop, its kernels and
    ctypes' NNPACK calls release the GIL, so this thread runs meanwhile."""
    timer = threading.Timer(seconds, os._exit, [0])
    timer.daemon = True
    timer.start()


def register() -> None:
    """server_init_callback: runs in the server process, so every session inherits it."""
    import tvm_ffi  # noqa: PLC0415

    tvm_ffi.register_global_func("harness.run_request", run_request, override=True)
    tvm_ffi.register_global_func("harness.probe", probe_json, override=True)
    tvm_ffi.register_global_func("harness.tune_nnpack", tune_nnpack, override=True)
    tvm_ffi.register_global_func("harness.deadline", deadline, override=True)
    if os.environ.get(PRELOAD_ENV):
        preload_nnpack()


def preload_nnpack() -> None:
    """Load NNPACK (torch's libtorch_cpu) here, once: sessions are forked from this process,
    and each of tuning's NNPACK candidates is a session, which would otherwise import torch
    anew (seconds on a Pi, 10 s and more under qemu). A board without it is told per
    candidate, by the candidate's own error."""
    from harness.builds.tvm_nnpack import time_nnpack_conv  # noqa: F401, PLC0415
    from harness.kernels import nnpack  # noqa: PLC0415

    nnpack.available()


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.farm.server", description=__doc__.splitlines()[0])
    parser.add_argument("--tracker", type=parse_addr, default=None,
                        help="the RPC tracker, HOST:PORT (default: none, serve whoever connects)")
    parser.add_argument("--key", default="", help="the device key this board serves, e.g. rasp3b")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=9090, help="first port to try (default 9090)")
    parser.add_argument("--name", default=None, help="this board's name in results (default host:port)")
    parser.add_argument("--session-log", default=None, help="append one JSON line per request here")
    parser.add_argument("--secret-from-env", action="store_true",
                        help=f"without --tracker: serve only clients that present the key in ${SECRET_ENV} "
                             "(TVM's RPC runs any code its clients send; `harness tune` over SSH sets a random one)")
    parser.add_argument("--preload-nnpack", action="store_true",
                        help="load NNPACK (through torch) once at start, for tuning's NNPACK candidates")
    args = parser.parse_args(argv)
    if args.tracker and not args.key:
        parser.error("--tracker needs --key")
    if args.secret_from_env and (args.tracker or not os.environ.get(SECRET_ENV)):
        parser.error(f"--secret-from-env needs ${SECRET_ENV} set, and no --tracker")
    # popped: the sessions and whatever they start do not need to see it
    key = os.environ.pop(SECRET_ENV) if args.secret_from_env else args.key
    from tvm import rpc  # noqa: PLC0415

    # The server runs in a worker process that inherits these.
    os.environ[NAME_ENV] = args.name or f"{os.uname().nodename}:{args.port}"
    if args.session_log:
        os.environ[LOG_ENV] = str(Path(args.session_log).resolve())
    if args.preload_nnpack:
        os.environ[PRELOAD_ENV] = "1"
    server = rpc.Server(args.host, args.port, args.port + 100, tracker_addr=args.tracker, key=key,
                        server_init_callback=register)
    # harness.tuning.remote reads this line: the port, and the process group to stop it by
    print(f"harness farm board {os.environ[NAME_ENV]} serving key {args.key or '-'} on port {server.port} "
          f"pgid {os.getpgid(0)}", flush=True)
    server.proc.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

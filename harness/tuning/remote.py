"""Tuning on the device: candidates compiled (and cross-compiled) on the host, timed on boards
through TVM's RPC, as AutoTVM did on the UNet study's cluster of Pis.

One timing path for both transports, TVM's own RPC (upload, load_module, time_evaluator):
- rpc devices: one session per board registered under the key, all requested from the
  tracker at the start and used at once, so the candidates are spread over every board (the
  tracker never gives one board to two sessions);
- ssh devices: `harness.farm.server` (TVM's RPC server plus the harness's functions) is
  started on the board over the verified SSH connection, bound to the board's 127.0.0.1, and
  reached through a local port forward over that same connection (one paramiko direct-tcpip
  channel per TCP connection). Nothing listens on the board's network, and the host key is
  checked once, by harness.devices.ssh.connect.

Why not upload each candidate's .so and time it with the on-device runner: every candidate
would start a Python process on the board and import TVM (5 s under qemu, seconds on a Pi),
and the farm needs the RPC path anyway. The RPC server imports once per search.

Each candidate is verified against the host's fp32 reference: its output is copied back from
the board and checked on the host, so the board needs no PyTorch for the TVM kernels. The
hybrid's NNPACK candidates run on the board through `harness.tune_nnpack` (NNPACK comes from
the board's libtorch_cpu), their output is checked the same way.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import re
import select
import socket
import socketserver
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from harness.devices.config import Device
from harness.errors import UserError
from harness.tuning.tasks import check_output, kernel_args, verify_and_time

SERVER_PORT = 9090  # first port the board's server tries on its 127.0.0.1 (it takes the next free one)
SERVER_START_S = 600  # importing TVM under qemu on a busy 2-core host took 100 s; a real Pi is faster
# per candidate on the board (upload, load, verify, time); under qemu a unet-tiny kernel takes
# seconds, a Pi's milliseconds
CANDIDATE_TIMEOUT_S = 300
READY = re.compile(r"serving .* on port (\d+) pgid (\d+)")


class CandidateTimeout(RuntimeError):
    """A candidate that did not finish on the board within the per-candidate timeout."""


class RemoteTimer:
    """Times candidates on the boards, one RPC session per candidate, opened with the
    per-candidate timeout as its session timeout: a candidate that hangs (a kernel that never
    returns) is killed by the board's server when its time is up, recorded as timed out, and
    the search goes on with a fresh session (TVM's server forks one process per session, so
    opening one costs a fork, not an import). `workers` candidates run at once, one per board.
    Host-side work (compile, link) runs one candidate at a time: TVM's compiler is not meant
    to be driven from several threads, and it is the boards that are slow."""

    def __init__(self, device: Device, open_session: Callable[[float], Any], workers: int, where: str,
                 candidate_timeout_s: float):
        self.device, self.workers, self.where = device, workers, where
        self._open, self.candidate_timeout_s = open_session, candidate_timeout_s
        self._host = threading.Lock()
        self._names = itertools.count()
        self._tmp = tempfile.TemporaryDirectory(prefix="harness-tune-")

    def close(self) -> None:
        self._tmp.cleanup()

    def _session(self, timeout_s: float) -> Any:
        try:
            return self._open(timeout_s)
        except (OSError, RuntimeError) as exc:
            raise self._lost(exc) from None

    @contextlib.contextmanager
    def _board(self) -> Iterator[Any]:
        start = time.monotonic()
        sess = self._session(self.candidate_timeout_s)
        try:
            yield sess
        except (OSError, RuntimeError) as exc:
            if "RPCSessionTimeoutError" in str(exc) or time.monotonic() - start >= self.candidate_timeout_s:
                raise CandidateTimeout(f"timed out: not done on the board after {self.candidate_timeout_s:g} s "
                                       "(--candidate-timeout)") from None
            raise self._lost_or(exc) from None

    def _lost(self, exc: Exception) -> UserError:
        return UserError(f"device {self.device.name!r}: lost the RPC session to the board "
                         f"({self.where}): {last_line(exc)}; measured candidates are saved, "
                         "run the same command again to continue")

    def _lost_or(self, exc: Exception) -> Exception:
        """A candidate's own failure is recorded; a lost board ends the search, or every
        later candidate would be recorded as failed and never measured again."""
        try:
            self._open(self.candidate_timeout_s).cpu().exist  # a fresh session, one round trip
        except (OSError, RuntimeError):
            return self._lost(exc)
        return exc

    def _export(self, func: Any, target: Any) -> Path:
        import tvm  # noqa: PLC0415

        from harness.deploy.cross import linker  # noqa: PLC0415

        with self._host:
            lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
            path = Path(self._tmp.name) / f"candidate-{next(self._names)}.so"
            lib.export_library(str(path), fcompile=linker(self.device))
        return path

    def tvm_kernel(self, func: Any, target: Any, data: dict[str, np.ndarray], dtype: str,
                   tolerance: float) -> list[float]:
        path = self._export(func, target)
        try:
            with self._board() as sess:
                sess.upload(str(path))
                try:
                    dev = sess.cpu()
                    return verify_and_time(sess.load_module(path.name), dev, kernel_args(data, dtype, dev),
                                           data["ref"], tolerance)
                finally:
                    sess.remove(path.name)
        finally:
            path.unlink()

    def nnpack_conv(self, spec: dict[str, Any], data: dict[str, np.ndarray], tolerance: float) -> list[float]:
        import tvm  # noqa: PLC0415

        with self._board() as sess:
            dev = sess.cpu()
            args = [tvm.runtime.tensor(np.ascontiguousarray(a, dtype=np.float32), dev)
                    for a in (data["x"], data["w"], data["b"], np.zeros_like(data["ref"]))]
            samples = json.loads(sess.get_function("harness.tune_nnpack")(json.dumps(spec), *args))
            check_output(args[-1].numpy(), data["ref"], tolerance)
        return samples


def last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


@contextlib.contextmanager
def remote_timer(device: Device, candidate_timeout_s: float = CANDIDATE_TIMEOUT_S) -> Iterator[RemoteTimer]:
    """A timer on the device's boards: every board of a farm's key, or the SSH device."""
    opener = farm_sessions if device.transport == "rpc" else ssh_sessions
    with opener(device) as (open_session, workers, where):
        timer = RemoteTimer(device, open_session, workers, where, candidate_timeout_s)
        try:
            yield timer
        finally:
            timer.close()


@contextlib.contextmanager
def farm_sessions(device: Device) -> Iterator[tuple[Callable[[float], Any], int, str]]:
    """One worker per board registered under the key; each candidate asks the tracker for a
    free board, so the candidates are spread over all of them (the tracker never gives one
    board to two sessions)."""
    from harness.farm.client import board_count, request_session  # noqa: PLC0415

    boards = board_count(device)
    t = device.tracker
    yield (lambda timeout_s: request_session(device, timeout_s)), boards, \
        f"{boards} board(s) of key {t.key!r} at the tracker {t.host}:{t.port}"


@contextlib.contextmanager
def ssh_sessions(device: Device) -> Iterator[tuple[Callable[[float], Any], int, str]]:
    from tvm import rpc  # noqa: PLC0415

    from harness.devices.ssh import connect  # noqa: PLC0415

    with connect(device) as s:
        port, pgid = start_board_server(s)
        try:
            with forward_port(s.client.get_transport(), port) as local:
                def open_session(timeout_s: float) -> Any:
                    return rpc.connect("127.0.0.1", local, session_timeout=timeout_s)

                try:
                    open_session(CANDIDATE_TIMEOUT_S).cpu().exist  # not connect_timeout_s: the forked session answers slowly under qemu
                except (OSError, RuntimeError) as exc:
                    raise UserError(f"device {device.name!r}: the board's RPC server on its 127.0.0.1:{port} "
                                    f"did not answer through the SSH forward: {last_line(exc)}") from None
                yield open_session, 1, f"{device.name} over SSH, RPC server on the board's 127.0.0.1:{port}"
        finally:
            stop_board_server(s, pgid)


def start_board_server(s: Any) -> tuple[int, int]:
    """Upload the harness, start its RPC server on the board's loopback; (port, process group)."""
    from harness.deploy.ssh_run import UploadLog, upload_cached  # noqa: PLC0415
    from harness.deploy.package import write_harness_zip  # noqa: PLC0415
    from harness.devices.ssh import remote_command  # noqa: PLC0415

    device = s.device
    cache = f"{device.workdir.rstrip('/')}/cache"
    s.run(["mkdir", "-p", "--", cache], timeout_s=device.connect_timeout_s * 3)
    with tempfile.TemporaryDirectory(prefix="harness-tune-") as tmp:
        harness_zip = upload_cached(s, write_harness_zip(Path(tmp)), cache, UploadLog())
    # under `timeout`: a server whose host vanished still ends; the command's own group is
    # what stop_board_server kills
    command = remote_command([device.python, "-m", "harness.farm.server", "--host", "127.0.0.1",
                              "--port", str(SERVER_PORT)], device.command_timeout_s,
                             cwd=device.workdir, env={"PYTHONPATH": harness_zip})
    # stdin from /dev/null: with the SSH channel's open stdin, the session process that TVM's
    # server forks for each connection hangs (futex wait) before it answers, on the emulated
    # board every time; the farm's servers, started with no stdin, never did
    chan = s.start(f"{command} </dev/null")
    return _wait_ready(device, chan)


def _wait_ready(device: Device, chan: Any) -> tuple[int, int]:
    out, deadline = b"", time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if chan.recv_ready():
            out += chan.recv(4096)
            found = READY.search(out.decode(errors="replace"))
            if found:
                return int(found.group(1)), int(found.group(2))
        elif chan.exit_status_ready():
            err = b""
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            tail = (err or out).decode(errors="replace").strip().splitlines() or ["no output"]
            raise UserError(f"device {device.name!r}: the board's RPC server exited with status "
                            f"{chan.recv_exit_status()}: {tail[-1]}")
        else:
            time.sleep(0.1)
    raise UserError(f"device {device.name!r}: the board's RPC server did not start in {SERVER_START_S} s")


def stop_board_server(s: Any, pgid: int) -> None:
    try:
        # then KILL: a session process that hangs in the board's kernel never handles TERM,
        # and it holds the server's listening socket (seen on the emulated board)
        s.run(["sh", "-c", 'kill -TERM -- "-$1" 2>/dev/null; sleep 2; kill -KILL -- "-$1" 2>/dev/null; true',
               "sh", str(pgid)], timeout_s=s.device.connect_timeout_s * 3, check=False)
    except UserError:
        pass  # the connection is gone; `timeout` ends the server on the board


class _Forwarder(socketserver.ThreadingTCPServer):
    daemon_threads = True


@contextlib.contextmanager
def forward_port(transport: Any, remote_port: int) -> Iterator[int]:
    """A local port on 127.0.0.1 forwarded to the board's 127.0.0.1:remote_port (ssh -L)."""

    class Pipe(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            chan = transport.open_channel("direct-tcpip", ("127.0.0.1", remote_port), self.client_address)
            try:
                pump(self.request, chan)
            finally:
                chan.close()

    server = _Forwarder(("127.0.0.1", 0), Pipe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def pump(sock: socket.socket, chan: Any) -> None:
    """Copy bytes both ways until either side closes."""
    while True:
        ready, _, _ = select.select([sock, chan], [], [])
        for src, dst in ((sock, chan), (chan, sock)):
            if src in ready:
                data = src.recv(1 << 16)
                if not data:
                    return
                dst.sendall(data)

"""Tuning on the device: candidates compiled (and cross-compiled) on the host, timed on boards
through TVM's RPC, as AutoTVM did on the UNet study's cluster of Pis.

One timing path for both transports, TVM's own RPC (upload, load_module, time_evaluator),
one session per candidate:
- rpc devices: each candidate asks the tracker for a free board of the key, and as many
  candidates are in flight as boards are registered, so they are spread over every board
  (the tracker never gives one board to two sessions);
- ssh devices: `harness.farm.server` (TVM's RPC server plus the harness's functions) is
  started on the board over the verified SSH connection, bound to the board's 127.0.0.1 and
  serving only clients that present a random secret, and reached through a port forward on
  this machine's 127.0.0.1 (harness.devices.forward: a child process with a second connection,
  made by the same harness.devices.ssh.connect, so host keys are verified the same way).
  Nothing listens on a network.

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
import secrets
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from harness.devices.config import Device
from harness.errors import UserError
from harness.farm.server import SECRET_ENV
from harness.tuning.tasks import check_output, kernel_args, verify_and_time

SERVER_PORT = 9090  # first port the board's server tries on its 127.0.0.1 (it takes the next free one)
SERVER_START_S = 600  # importing TVM under qemu on a busy 2-core host took 100 s; a real Pi is faster
# per candidate on the board (upload, load, verify, time); under qemu a unet-tiny kernel takes
# seconds, a Pi's milliseconds
CANDIDATE_TIMEOUT_S = 300
FIRST_SESSION_S = 60  # a fork and one round trip: 0.1 s on the emulated board, but qemu on a busy host
FORWARD_START_S = 120  # a fresh Python process and an SSH connection; connect's own timeouts come first
READY = re.compile(r"serving .* on port (\d+) pgid (\d+)")


class CandidateTimeout(RuntimeError):
    """A candidate that did not finish on the board within the per-candidate timeout."""


class RemoteTimer:
    """Times candidates on the boards, one RPC session per candidate, which first sets its
    deadline (harness.deadline, the per-candidate timeout): a candidate that hangs (a kernel
    that never returns) ends with its session's process, is recorded as timed out, and the
    search goes on with a fresh session (TVM's server forks one process per session, so
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
        sess = self._session(backstop(self.candidate_timeout_s))
        try:
            self._deadline(sess)(self.candidate_timeout_s)
            yield sess
        except (OSError, RuntimeError) as exc:
            if isinstance(exc, TimeoutError) or time.monotonic() - start >= self.candidate_timeout_s:
                raise CandidateTimeout(f"timed out: not done on the board after {self.candidate_timeout_s:g} s "
                                       "(--candidate-timeout)") from None
            raise self._lost_or(exc) from None
        finally:
            close_session(sess)

    def _deadline(self, sess: Any) -> Any:
        try:
            return sess.get_function("harness.deadline")
        except AttributeError:
            raise UserError(f"device {self.device.name!r}: the board's server ({self.where}) is an older "
                            "harness.farm.server without harness.deadline; restart it from this version") from None

    def _lost(self, exc: Exception) -> UserError:
        return UserError(f"device {self.device.name!r}: lost the RPC session to the board "
                         f"({self.where}): {last_line(exc)}; measured candidates are saved, "
                         "run the same command again to continue")

    def _lost_or(self, exc: Exception) -> Exception:
        """A candidate's own failure is recorded; a lost board ends the search, or every
        later candidate would be recorded as failed and never measured again."""
        try:
            close_session(self._open(backstop(self.candidate_timeout_s)))  # connecting is a round trip (its init)
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
            with self._board() as sess:  # the upload goes to the session's directory, removed with it
                sess.upload(str(path))
                dev = sess.cpu()
                return verify_and_time(sess.load_module(path.name), dev, kernel_args(data, dtype, dev),
                                       data["ref"], tolerance)
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


def backstop(candidate_timeout_s: float) -> float:
    """TVM's session timeout, a backstop only: each candidate's session ends itself at its
    deadline (harness.farm.server.deadline) without writing into the connection, as TVM's
    timeout does. This one stops a session that hangs before it could set its deadline."""
    return 2 * candidate_timeout_s + 30


def close_session(sess: Any) -> None:
    """Close an RPC session's connection before its remote objects (module, tensors,
    functions) are freed: each frees its remote handle through the session when it goes, a
    round trip each, and after a failed candidate the connection may be broken or hold an
    answer nobody asked for. Closed, a free fails at once, and TVM ignores that."""
    sess.get_function("CloseRPCConnection")()


def last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


@contextlib.contextmanager
def remote_timer(device: Device, candidate_timeout_s: float = CANDIDATE_TIMEOUT_S,
                 nnpack: bool = False) -> Iterator[RemoteTimer]:
    """A timer on the device's boards: every board of a farm's key, or the SSH device (whose
    server loads NNPACK at start if `nnpack`: the hybrid's candidates need it)."""
    sessions = farm_sessions(device) if device.transport == "rpc" else ssh_sessions(device, nnpack)
    with sessions as (open_session, workers, where):
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
def ssh_sessions(device: Device, nnpack: bool = False) -> Iterator[tuple[Callable[[float], Any], int, str]]:
    from tvm import rpc  # noqa: PLC0415

    from harness.devices.forward import forward_process  # noqa: PLC0415
    from harness.devices.ssh import connect  # noqa: PLC0415

    with connect(device) as s:
        server = start_board_server(s, nnpack)
        try:
            with forward_process(device, server.port, FORWARD_START_S) as local:
                def open_session(timeout_s: float) -> Any:
                    return rpc.connect("127.0.0.1", local, key=server.secret, session_timeout=timeout_s)

                try:
                    close_session(open_session(FIRST_SESSION_S))
                except (OSError, RuntimeError) as exc:
                    raise UserError(f"device {device.name!r}: the board's RPC server on its 127.0.0.1:{server.port} "
                                    f"did not answer through the SSH forward: {last_line(exc)} "
                                    f"(its log: {server.last_line()})") from None
                yield open_session, 1, f"{device.name} over SSH, RPC server on the board's 127.0.0.1:{server.port}"
        finally:
            stop_board_server(s, server.pgid)


def start_board_server(s: Any, nnpack: bool = False) -> BoardServer:
    """Upload the harness, start its RPC server on the board's loopback."""
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
                              "--port", str(SERVER_PORT), "--secret-from-env",
                              *(["--preload-nnpack"] if nnpack else [])], device.command_timeout_s,
                             cwd=device.workdir, env={"PYTHONPATH": harness_zip})
    # The secret (TVM's RPC runs any code a client sends: other users of the board must not
    # get a session) goes through the shell's stdin, never on a command line, which every
    # user can read. The server's stdin is /dev/null: with the SSH channel's open stdin, the
    # session process TVM's server forks for each connection hung (futex wait) before it
    # answered, on the emulated board every time.
    secret = secrets.token_hex(16)
    chan = s.start(f"read -r {SECRET_ENV} && export {SECRET_ENV} && {command} </dev/null")
    chan.sendall(f"{secret}\n".encode())
    chan.shutdown_write()
    server = BoardServer(chan, secret)
    server.wait_ready(device.name, SERVER_START_S)
    return server


class BoardServer:
    """The board's RPC server as started over SSH: its port and process group (from its ready
    line) and its output, stdout and stderr together, read as it comes by a thread. Read it
    must be: an SSH channel nobody reads stops its sender once its window (2 MB) is full, and
    the server, which logs every session, would then block. The last lines are kept for
    error messages."""

    def __init__(self, chan: Any, secret: str):
        self.chan, self.secret = chan, secret
        self.port = self.pgid = 0
        self.tail: deque[str] = deque(maxlen=20)
        self._ready = threading.Event()  # set by the ready line, or when the server's output ends
        chan.set_combine_stderr(True)
        threading.Thread(target=self._read, name="board-server-output", daemon=True).start()

    def _read(self) -> None:
        pending = b""
        while data := self.chan.recv(4096):
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                self._line(line.decode(errors="replace"))
        self._line(pending.decode(errors="replace"))
        self._ready.set()

    def _line(self, text: str) -> None:
        if text.strip():
            self.tail.append(text.strip())
        if not self.port and (found := READY.search(text)):
            self.port, self.pgid = int(found.group(1)), int(found.group(2))
            self._ready.set()

    def last_line(self) -> str:
        return self.tail[-1] if self.tail else "no output"

    def wait_ready(self, device_name: str, timeout_s: float) -> None:
        if not self._ready.wait(timeout_s):
            raise UserError(f"device {device_name!r}: the board's RPC server did not start in {timeout_s:g} s")
        if not self.port:
            status = self.chan.recv_exit_status() if self.chan.exit_status_ready() else "unknown"
            raise UserError(f"device {device_name!r}: the board's RPC server exited with status "
                            f"{status}: {self.last_line()}")


def stop_board_server(s: Any, pgid: int) -> None:
    try:
        # then KILL: a session process that hangs in the board's kernel never handles TERM,
        # and it holds the server's listening socket (seen on the emulated board)
        s.run(["sh", "-c", 'kill -TERM "-$1" 2>/dev/null; sleep 2; kill -KILL "-$1" 2>/dev/null; true',
               "sh", str(pgid)], timeout_s=s.device.connect_timeout_s * 3, check=False)
    except UserError:
        pass  # the connection is gone; `timeout` ends the server on the board

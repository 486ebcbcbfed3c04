"""A local port forward over a verified SSH connection (what `ssh -L` does), for TCP services
that listen only on the device's 127.0.0.1 (harness.tuning.remote: TVM's RPC server).

forward_process runs it in a process of its own, with its own connection: TVM's RPC client
blocks on its socket while holding the GIL when a remote object is freed (the free is a round
trip to the board), so a relay in the client's process, which needs that GIL to pass the
answer on, never does: both wait forever (seen on the emulated board, first candidate).

The listening socket is on this machine's 127.0.0.1; each accepted connection becomes one
paramiko direct-tcpip channel, and bytes are relayed by one thread per direction:
- an end-of-file is passed on as a half-close (shutdown of the writing side), never as a
  close of both ends: a peer that has finished sending may still be owed a reply;
- a send blocked by a full SSH window or socket buffer stalls only its own direction;
- no select() on paramiko channels (their readiness pipe is an emulation of a socket).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import signal
import socket
import socketserver
import threading
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator

import paramiko

from harness.devices.config import Device
from harness.errors import UserError

CHUNK = 1 << 16
OPEN_TIMEOUT_S = 60  # the device's sshd connecting to its own loopback port


@contextlib.contextmanager
def forward_process(device: Device, remote_port: int, start_timeout_s: float) -> Iterator[int]:
    """forward_port(remote_port) of the device, served by a child process; yields the local
    port. The child ends when this context exits, or when this process dies (its pipe closes)."""
    # spawn, not fork: this process has threads (paramiko's, TVM's) whose locks a fork copies
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_forward_main, args=(device, remote_port, there), daemon=True,
                       name=f"harness ssh forward {device.name}")
    proc.start()
    there.close()
    try:
        yield _reported_port(device, proc, here, start_timeout_s)
    finally:
        here.close()
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _reported_port(device: Device, proc: Any, conn: Connection, timeout_s: float) -> int:
    if not conn.poll(timeout_s):
        raise UserError(f"device {device.name!r}: the SSH port forward did not start in {timeout_s:g} s")
    try:
        kind, value = conn.recv()
    except EOFError:
        proc.join(timeout=10)
        raise UserError(f"device {device.name!r}: the SSH port forward's process ended "
                        f"(exit code {proc.exitcode})") from None
    if kind == "error":
        raise UserError(value)
    return value


def _forward_main(device: Device, remote_port: int, conn: Connection) -> None:
    """The child: forward until the parent closes its end of the pipe."""
    from harness.devices.ssh import connect  # noqa: PLC0415

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes the pipe
    try:
        with connect(device) as s, forward_port(s.client.get_transport(), remote_port) as local:
            conn.send(("port", local))
            with contextlib.suppress(EOFError, OSError):
                conn.recv()
    except UserError as exc:
        conn.send(("error", str(exc)))


class _Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True  # a relay never keeps this process alive
    allow_reuse_address = True


@contextlib.contextmanager
def forward_port(transport: paramiko.Transport, remote_port: int, remote_host: str = "127.0.0.1") -> Iterator[int]:
    """A port on this machine's 127.0.0.1 forwarded to remote_host:remote_port as the device
    sees it; yields the local port. Connections still open at exit are cut."""

    class Relay(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                chan = transport.open_channel("direct-tcpip", (remote_host, remote_port), self.client_address,
                                              timeout=OPEN_TIMEOUT_S)
            except (paramiko.SSHException, OSError):
                return  # refused on the device (nothing listening): the local client reads EOF
            try:
                relay(self.request, chan)
            finally:
                chan.close()

    server = _Listener(("127.0.0.1", 0), Relay)
    threading.Thread(target=server.serve_forever, name="ssh-forward", daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def relay(sock: socket.socket, chan: Any) -> None:
    """Copy sock -> chan here and chan -> sock in a second thread; return when both ended."""
    back = threading.Thread(target=_copy, args=(chan.recv, sock.sendall, lambda: sock.shutdown(socket.SHUT_WR)),
                            name="ssh-forward-back", daemon=True)
    back.start()
    _copy(sock.recv, chan.sendall, chan.shutdown_write)
    back.join()


def _copy(recv: Callable[[int], bytes], send: Callable[[bytes], Any], eof: Callable[[], Any]) -> None:
    """Until the source's EOF (then half-close the destination) or an error on either side
    (the peer is gone: nothing more can be delivered, so stop)."""
    try:
        while data := recv(CHUNK):
            send(data)
        eof()
    except (OSError, paramiko.SSHException):
        pass

"""harness.devices.forward (`ssh -L` over the verified paramiko connection) through a real
OpenSSH server on 127.0.0.1, to services on this machine's loopback (the device's, here)."""
from __future__ import annotations

import ctypes
import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from harness.devices.forward import forward_port, forward_process
from harness.devices.ssh import connect
from tests.sshd import SSHServer, free_port
from tests.test_ssh import loopback


def serve_once(handle: Callable[[socket.socket], None]) -> tuple[int, threading.Thread]:
    """A one-connection TCP service on 127.0.0.1: its port and its thread."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        with listener, listener.accept()[0] as conn:
            handle(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def echo(conn: socket.socket) -> None:
    while data := conn.recv(1 << 16):
        conn.sendall(data)


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(1 << 16):
        chunks.append(data)
    return b"".join(chunks)


@pytest.fixture
def transport(sshd: SSHServer, tmp_path: Path) -> Iterator:
    with connect(loopback(sshd, tmp_path)) as s:
        yield s.client.get_transport()


def test_a_half_close_reaches_the_service_and_its_reply_comes_back(transport):
    """The client sends, then shuts its writing side; the service answers only after that EOF.
    A relay that closes both ends at the first EOF loses the answer."""
    def digest_after_eof(conn: socket.socket) -> None:
        conn.sendall(hashlib.sha256(read_to_eof(conn)).hexdigest().encode())

    port, service = serve_once(digest_after_eof)
    payload = os.urandom(300_000)
    with forward_port(transport, port) as local, socket.create_connection(("127.0.0.1", local), timeout=30) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        assert read_to_eof(c).decode() == hashlib.sha256(payload).hexdigest()
    service.join(timeout=30)


def test_both_directions_at_once_arrive_intact(transport):
    """An echo service while the client is still sending: each direction blocks on its own
    (4 MB is more than the SSH window and the socket buffers hold)."""
    port, service = serve_once(echo)
    payload = os.urandom(4 << 20)
    with forward_port(transport, port) as local, socket.create_connection(("127.0.0.1", local), timeout=60) as c:
        sender = threading.Thread(target=lambda: (c.sendall(payload), c.shutdown(socket.SHUT_WR)), daemon=True)
        sender.start()
        assert read_to_eof(c) == payload
        sender.join(timeout=60)
    service.join(timeout=30)


def test_nothing_listening_on_the_device_is_an_eof_not_a_hang(transport):
    with forward_port(transport, free_port()) as local, socket.create_connection(("127.0.0.1", local), timeout=30) as c:
        assert c.getpeername()[0] == "127.0.0.1"  # the forward listens on loopback only
        assert c.recv(1) == b""


def recv_holding_the_gil(sock: socket.socket, size: int) -> bytes:
    """recv(2) the way TVM's RPC client waits when a remote object is freed: blocking, with
    the GIL held (ctypes.PyDLL does not release it)."""
    buf = ctypes.create_string_buffer(size)
    got = ctypes.PyDLL(None).recv(sock.fileno(), buf, size, 0)
    return buf.raw[:max(got, 0)]


ECHO_PROCESS = """
import socket
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
while data := conn.recv(65536):
    conn.sendall(data)
"""


def test_a_client_that_blocks_holding_the_gil_gets_its_answer(sshd: SSHServer, tmp_path: Path):
    """The forward runs in a process of its own: a relay in this process would need the GIL
    this client holds, and neither would ever go on (the service is a process of its own too)."""
    service = subprocess.Popen([sys.executable, "-c", ECHO_PROCESS], stdout=subprocess.PIPE, text=True)
    try:
        port = int(service.stdout.readline())
        with forward_process(loopback(sshd, tmp_path), port, 60) as local, \
                socket.create_connection(("127.0.0.1", local), timeout=30) as c:
            c.settimeout(None)  # a blocking socket for recv(2); SO_RCVTIMEO makes a hang a failure
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 20, 0))
            c.sendall(b"ping")
            assert recv_holding_the_gil(c, 4) == b"ping"
    finally:
        service.kill()
        service.wait()

"""A real OpenSSH server on 127.0.0.1 for tests, started by scripts/loopback-sshd.sh (the same
script the README tells users to run), with generated host and client keys.

Usable by any test module: `from tests.sshd import SSHServer` or the fixtures in conftest.py.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "loopback-sshd.sh"
SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port}")


def descendants(pid: int) -> list[int]:
    """Every process below pid (sshd's per-connection children call setsid, so a process
    group kill would miss them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class SSHServer:
    """sshd -D on a free loopback port; `dir` holds keys, known_hosts and devices.yaml."""

    def __init__(self, directory: Path, port: int | None = None, python: str = sys.executable,
                 log_level: str = "INFO"):
        self.dir, self.port, self.python, self.log_level = directory, port or free_port(), python, log_level
        self.proc: subprocess.Popen | None = None

    def start(self) -> SSHServer:
        if not SSHD.exists():
            pytest.skip("openssh-server is not installed (scripts/setup.sh --dev installs it)")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["bash", str(SCRIPT), "--port", str(self.port), "--dir", str(self.dir),
                                      "--python", self.python, "--log-level", self.log_level,
                                      "--foreground"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "HARNESS_HOST_PYTHON": sys.executable})
        wait_for_port(self.port)
        return self

    def kill_all(self) -> None:
        """SIGKILL the server, every session it serves and whatever those run."""
        if self.proc is None:
            return
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc = None
        self.log.close()

    @property
    def log_path(self) -> Path:
        return self.dir.parent / f"sshd-{self.port}.log"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def workdir(self) -> Path:
        return self.dir / "work"

    def device_entry(self) -> dict[str, Any]:
        return yaml.safe_load((self.dir / "devices.yaml").read_text())["devices"]["loopback"]

    def devices_file(self, path: Path, local: dict[str, Any] | None = None, **overrides: Any) -> Path:
        """A devices file with a `loopback` device for this server (fields overridden, None
        removes one) and a `local` device (with `local`'s fields)."""
        entry = {k: v for k, v in {**self.device_entry(), **overrides}.items() if v is not None}
        path.write_text(yaml.safe_dump({"default": "loopback", "devices": {
            "loopback": entry, "local": {"transport": "local", **(local or {})}}}))
        return path


def new_key(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def ssh_env(home: Path) -> dict[str, str]:
    """The environment for a CLI under test: its own HOME (so ~/.ssh is empty) and no agent."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}
    env["HOME"] = str(home)
    return env


def harness_cli(args: list[str], env: dict[str, str], timeout_s: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout_s)


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None

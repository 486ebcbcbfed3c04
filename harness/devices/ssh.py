"""The SSH transport: connect to a device with paramiko the way OpenSSH would, run quoted
commands with timeouts, and move files over SFTP.

OpenSSH behaviour kept here: ~/.ssh/config aliases (HostName, Port, User, IdentityFile,
UserKnownHostsFile), host keys from /etc/ssh/ssh_known_hosts and ~/.ssh/known_hosts, unknown
and changed host keys refused. Trust on first use only for a device entry that opts in.
Every failure is a UserError naming the device and what to do.
"""
from __future__ import annotations

import hashlib
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import paramiko

from harness.devices.config import Device
from harness.errors import UserError

SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
KILL_GRACE_S = 5  # after the remote `timeout` sends TERM, it sends KILL this much later


def user_ssh_dir() -> Path:
    # Path.home() honours $HOME, so tests (and users) can point it at another directory.
    return Path.home() / ".ssh"


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, after ~/.ssh/config and the device entry are merged."""
    hostname: str
    port: int
    user: str | None
    key_files: list[str]
    known_hosts: list[Path]  # read in order; new keys (trust on first use) go to the last
    connect_timeout_s: float

    @property
    def hostkey_name(self) -> str:
        # known_hosts names a non-default port as [host]:port, as OpenSSH writes it
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def resolve_endpoint(device: Device, ssh_config: Path | None = None) -> Endpoint:
    """Merge the device entry with ~/.ssh/config; the device entry wins where it says something."""
    if not device.host:
        raise UserError(f"device {device.name!r}: no 'host' given for transport ssh")
    config_path = ssh_config or user_ssh_dir() / "config"
    cfg = paramiko.SSHConfig.from_path(str(config_path)) if config_path.exists() else paramiko.SSHConfig()
    entry = cfg.lookup(device.host)
    port = device.port if device.port != 22 else int(entry.get("port", 22))
    key_files = [str(Path(device.key).expanduser())] if device.key else \
        [str(Path(k).expanduser()) for k in entry.get("identityfile", [])]
    known = [SYSTEM_KNOWN_HOSTS, user_ssh_dir() / "known_hosts"]
    known += [Path(p).expanduser() for p in entry.get("userknownhostsfile", "").split() if p]
    if device.known_hosts:
        known.append(Path(device.known_hosts).expanduser())
    return Endpoint(entry.get("hostname", device.host), port, device.user or entry.get("user"),
                    key_files, known, device.connect_timeout_s)


class _UnknownHostKey(Exception):
    def __init__(self, name: str, key: paramiko.PKey):
        super().__init__(name)
        self.name, self.key = name, key


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(hostname, key)


class _TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Accept an unknown key and append it to one known_hosts file (never rewriting the file,
    unlike paramiko's AutoAddPolicy, which would drop comments and others' entries)."""

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(paramiko.hostkeys.HostKeyEntry([hostname], key).to_line())


def fingerprint(key: paramiko.PKey) -> str:
    import base64  # noqa: PLC0415

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


class SSHSession:
    """One connection to a device: quoted commands with timeouts, and SFTP."""

    def __init__(self, device: Device, client: paramiko.SSHClient):
        self.device, self.client = device, client
        self._sftp: paramiko.SFTPClient | None = None

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
            self._sftp.get_channel().settimeout(self.device.connect_timeout_s * 6)
        return self._sftp

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()

    def __enter__(self) -> SSHSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, argv: list[str], timeout_s: float | None = None, cwd: str | None = None,
            env: dict[str, str] | None = None, on_stderr_line: Callable[[str], None] | None = None,
            check: bool = True) -> CommandResult:
        """Run argv on the device (every word shell-quoted) and wait at most timeout_s.

        The remote side runs under coreutils `timeout`, so a hanging command is killed on the
        device too, not only abandoned by us."""
        timeout_s = timeout_s or self.device.command_timeout_s
        command = remote_command(argv, timeout_s, cwd, env)
        try:
            chan = self.client.get_transport().open_session(timeout=self.device.connect_timeout_s)
            chan.exec_command(command)
            out, err = _collect(chan, time.monotonic() + timeout_s + KILL_GRACE_S + 2, on_stderr_line)
        except _Deadline:
            raise UserError(f"device {self.device.name!r}: remote command timed out after {timeout_s:g} s "
                            f"and was killed: {shlex.join(argv)}") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise lost_connection(self.device, exc) from None
        status = chan.recv_exit_status() if chan.exit_status_ready() else -1
        if status in (124, 137):  # coreutils timeout: TERM'd (124) or KILL'd (137)
            raise UserError(f"device {self.device.name!r}: remote command timed out after {timeout_s:g} s "
                            f"and was killed: {shlex.join(argv)}")
        if status == -1:
            raise lost_connection(self.device, EOFError("no exit status"))
        result = CommandResult(status, out, err)
        if check and status != 0:
            last = (err.strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"device {self.device.name!r}: `{shlex.join(argv)}` failed "
                            f"(exit {status}): {last}")
        return result

    def sftp_call(self, what: str, fn: Callable[[], object]) -> object:
        try:
            return fn()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == 2:
                raise UserError(f"device {self.device.name!r}: {what}: no such file") from None
            raise lost_connection(self.device, exc) from None


class _Deadline(Exception):
    pass


def remote_command(argv: list[str], timeout_s: float, cwd: str | None = None,
                   env: dict[str, str] | None = None) -> str:
    words = ["timeout", f"--kill-after={KILL_GRACE_S}", f"{max(1, round(timeout_s))}"]
    if env:
        words += ["env", *(f"{k}={v}" for k, v in env.items())]
    line = shlex.join(words + argv)
    return f"cd {shlex.quote(cwd)} && exec {line}" if cwd else f"exec {line}"


def _lines(buffer: bytearray) -> Iterator[str]:
    while b"\n" in buffer:
        line, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        yield line.decode(errors="replace")


def _collect(chan: paramiko.Channel, deadline: float,
             on_stderr_line: Callable[[str], None] | None) -> tuple[str, str]:
    out, err, pending = bytearray(), bytearray(), bytearray()
    chan.settimeout(0.2)
    while True:
        got = False
        while chan.recv_ready():
            out += chan.recv(65536)
            got = True
        while chan.recv_stderr_ready():
            chunk = chan.recv_stderr(65536)
            err += chunk
            pending += chunk
            got = True
        for line in _lines(pending):
            if on_stderr_line:
                on_stderr_line(line)
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            break
        if chan.closed or chan.get_transport() is None or not chan.get_transport().is_active():
            raise EOFError("the connection closed")
        if time.monotonic() > deadline:
            chan.close()
            raise _Deadline()
        if not got:
            time.sleep(0.05)
    return out.decode(errors="replace"), err.decode(errors="replace")


def lost_connection(device: Device, exc: BaseException) -> UserError:
    detail = str(exc) or type(exc).__name__
    return UserError(f"device {device.name!r}: lost the SSH connection ({detail}); "
                     "the run was abandoned and nothing was written")


def connect(device: Device, ssh_config: Path | None = None) -> SSHSession:
    """An authenticated session with a verified host key, or a UserError saying what to do."""
    ep = resolve_endpoint(device, ssh_config)
    client = paramiko.SSHClient()
    for path in ep.known_hosts:
        if path.exists():
            client.load_system_host_keys(str(path))
    client.set_missing_host_key_policy(
        _TrustOnFirstUse(ep.known_hosts[-1]) if device.trust_on_first_use else _RejectUnknown())
    where = f"{ep.user + '@' if ep.user else ''}{ep.hostname}:{ep.port}"
    try:
        client.connect(ep.hostname, port=ep.port, username=ep.user, key_filename=ep.key_files or None,
                       allow_agent=True, look_for_keys=not ep.key_files, timeout=ep.connect_timeout_s,
                       banner_timeout=ep.connect_timeout_s, auth_timeout=ep.connect_timeout_s)
    except _UnknownHostKey as exc:
        client.close()
        raise UserError(
            f"device {device.name!r}: host key of {exc.name} is not known ({exc.key.get_name()} "
            f"{fingerprint(exc.key)}); verify it, then run `ssh-keyscan -p {ep.port} {ep.hostname} "
            f">> {ep.known_hosts[-1]}` (or ssh there once) to add it, or set trust_on_first_use: true "
            "in the device entry") from None
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise UserError(
            f"device {device.name!r}: HOST KEY OF {ep.hostkey_name} HAS CHANGED (now {exc.key.get_name()} "
            f"{fingerprint(exc.key)}, known as {fingerprint(exc.expected_key)}); this may be an attack. "
            f"If the device was reinstalled, remove the old key with `ssh-keygen -R '{ep.hostkey_name}'` "
            "and verify the new one") from None
    except paramiko.AuthenticationException as exc:
        client.close()
        keys = ", ".join(ep.key_files) or "ssh-agent and ~/.ssh/id_*"
        raise UserError(f"device {device.name!r}: authentication to {where} failed with {keys} ({exc}); "
                        "check the device's 'key' and the server's authorized_keys") from None
    except (socket.timeout, TimeoutError):
        client.close()
        raise UserError(f"device {device.name!r}: connecting to {where} timed out after "
                        f"{ep.connect_timeout_s:g} s") from None
    except (OSError, paramiko.SSHException, EOFError) as exc:
        client.close()
        raise UserError(f"device {device.name!r}: cannot connect to {where}: "
                        f"{getattr(exc, 'strerror', None) or exc}") from None
    return SSHSession(device, client)


@dataclass
class UploadStats:
    uploaded: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)

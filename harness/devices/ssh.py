"""The SSH transport: connect to a device with paramiko the way OpenSSH would, run quoted
commands with timeouts, and move files over SFTP.

OpenSSH behaviour kept here: ~/.ssh/config through paramiko.SSHConfig (HostName, Port, User,
IdentityFile, UserKnownHostsFile, ProxyCommand, ProxyJump, first obtained value wins, the
device entry's fields first like ssh's command-line options), host keys from
/etc/ssh/ssh_known_hosts and ~/.ssh/known_hosts for the device and every jump host, unknown and
changed host keys refused. Trust on first use only for a device entry that opts in (never for
its jump hosts), and every key so saved is logged and recorded. A remote command killed by a
signal is reported as such. Every failure is a UserError naming the device and what to do.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import logging
import os
import select
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

from harness.devices.config import Device
from harness.errors import UserError

log = logging.getLogger(__name__)
# paramiko's transport thread logs a failed handshake (e.g. a ProxyCommand that ended) with its
# traceback, then the same failure reaches connect() and becomes one UserError line; without a
# handler of the application's, Python would print that traceback on stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
KILL_GRACE_S = 5  # after the remote `timeout` sends TERM, it sends KILL this much later
MAX_JUMPS = 8  # a longer ProxyJump chain is a loop in ~/.ssh/config


def user_ssh_dir() -> Path:
    # Path.home() honours $HOME, so tests (and users) can point it at another directory.
    return Path.home() / ".ssh"


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect to one hop, after ~/.ssh/config and the device entry are merged."""
    label: str  # how errors name the hop: "" for the device itself, "jump host gw" for a jump
    hostname: str
    port: int
    user: str | None
    key_files: list[str]
    known_hosts: list[Path]  # read in order; new keys (trust on first use) go to the last
    connect_timeout_s: float
    proxy_command: str | None = None
    jump: Endpoint | None = None  # the hop this one is reached through (ProxyJump)

    @property
    def hostkey_name(self) -> str:
        # known_hosts names a non-default port as [host]:port, as OpenSSH writes it
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def where(self) -> str:
        hop = f"{self.user + '@' if self.user else ''}{self.hostname}:{self.port}"
        via = f" through {self.jump.label} {self.jump.where}" if self.jump else \
            f" through ProxyCommand `{self.proxy_command}`" if self.proxy_command else ""
        return hop + via


def _read_config(ssh_config: Path | None) -> str:
    path = ssh_config or user_ssh_dir() / "config"
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise UserError(f"{path}: cannot read the SSH config: {exc.strerror}") from None


def _lookup(config_text: str, host: str, first: dict[str, str | int | None]) -> paramiko.SSHConfigDict:
    """paramiko's lookup of host, with `first` obtained before the file, as OpenSSH treats its
    command-line options: those values win, and %p/%r in ProxyCommand expand to them."""
    lines = "".join(f"  {k} {v}\n" for k, v in first.items() if v is not None)
    try:
        return paramiko.SSHConfig.from_text((f"Host *\n{lines}" if lines else "") + config_text).lookup(host)
    except paramiko.ssh_exception.ConfigParseError as exc:
        raise UserError(f"~/.ssh/config: {exc}") from None


def _jump_spec(spec: str) -> tuple[str, str | None, int | None]:
    """[user@]host[:port] -> (host, user, port), as ssh -J reads it."""
    user, _, hostport = spec.rpartition("@")
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    if not host or (port and not port.isdigit()):
        raise UserError(f"ProxyJump {spec!r}: expected [user@]host[:port]")
    return host, user or None, int(port) if port else None


def _resolve(device: Device, config_text: str, host: str, first: dict[str, str | int | None],
             label: str, depth: int = 0) -> Endpoint:
    """One hop's Endpoint, and through its ProxyJump the hops before it."""
    if depth > MAX_JUMPS:
        raise UserError(f"device {device.name!r}: ProxyJump chain longer than {MAX_JUMPS} hops "
                        "(a loop in ~/.ssh/config?)")
    entry = _lookup(config_text, host, first)
    try:
        port = int(entry.get("port", 22))
    except ValueError:
        raise UserError(f"~/.ssh/config: Host {host}: Port {entry['port']!r} is not a number") from None
    known = [SYSTEM_KNOWN_HOSTS, user_ssh_dir() / "known_hosts"]
    known += [Path(p).expanduser() for p in entry.get("userknownhostsfile", "").split() if p]
    if device.known_hosts:  # the entry's file serves its jump hosts too: a lab keeps them together
        known.append(Path(device.known_hosts).expanduser())
    jump, command = None, None
    # ProxyJump and ProxyCommand exclude each other; the one obtained first wins (ssh_config(5))
    proxy = next((k for k in entry if k in ("proxyjump", "proxycommand")), None)
    if proxy == "proxyjump" and entry["proxyjump"].lower() != "none":
        *before, last = entry["proxyjump"].split(",")
        jump_host, jump_user, jump_port = _jump_spec(last)
        # as `ssh -J a,b` does: b is reached through a, whatever b's own ProxyJump says
        jump = _resolve(device, config_text, jump_host,
                        {"ProxyJump": ",".join(before) or None, "User": jump_user, "Port": jump_port},
                        f"jump host {last}", depth + 1)
    elif proxy == "proxycommand" and entry["proxycommand"]:  # paramiko reads `none` as None
        command = entry["proxycommand"]
    return Endpoint(label, entry["hostname"], port, entry.get("user"),
                    [str(Path(k).expanduser()) for k in entry.get("identityfile", [])], known,
                    device.connect_timeout_s, command, jump)


def resolve_endpoint(device: Device, ssh_config: Path | None = None) -> Endpoint:
    """Merge the device entry with ~/.ssh/config; the device entry wins where it says something."""
    if not device.host:
        raise UserError(f"device {device.name!r}: no 'host' given for transport ssh")
    ep = _resolve(device, _read_config(ssh_config), device.host,
                  {"Port": device.port, "User": device.user, "ProxyJump": device.proxy_jump}, "")
    if device.key:
        key = Path(device.key).expanduser()
        if not key.is_file():
            raise UserError(f"device {device.name!r}: key file {key} (the entry's 'key') does not exist")
        ep = dataclasses.replace(ep, key_files=[str(key)])
    return ep


@dataclass(frozen=True)
class SavedHostKey:
    """A host key accepted on first use and appended to a known_hosts file."""
    host: str
    key_type: str
    fingerprint: str
    path: Path

    def __str__(self) -> str:
        return (f"trusted on first use: saved the host key of {self.host} ({self.key_type} "
                f"{self.fingerprint}) to {self.path}")


class _UnknownHostKey(Exception):
    def __init__(self, name: str, key: paramiko.PKey):
        super().__init__(name)
        self.name, self.key = name, key


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(hostname, key)


class _TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Accept an unknown key and append it to one known_hosts file (never rewriting the file,
    unlike paramiko's AutoAddPolicy, which would drop comments and others' entries), and say so:
    a key accepted silently could not be checked afterwards."""

    def __init__(self, path: Path, saved: list[SavedHostKey]):
        self.path, self.saved = path, saved

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(paramiko.hostkeys.HostKeyEntry([hostname], key).to_line())
        record = SavedHostKey(hostname, key.get_name(), fingerprint(key), self.path)
        self.saved.append(record)
        log.warning("%s", record)


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass
class CommandResult:
    exit_status: int  # -1 when the command was killed by a signal
    stdout: str
    stderr: str
    signal: str | None = None  # e.g. "KILL", from OpenSSH's exit-signal


def describe_signal(name: str) -> str:
    """'KILL' -> 'SIGKILL (signal 9; ...)' with what usually sends it."""
    try:
        number = f"signal {signal.Signals['SIG' + name].value}"
    except KeyError:
        number = "an unknown signal"
    why = {"KILL": "; the kernel's OOM killer does this when the board runs out of memory: "
                   "see `dmesg` on the board",
           "SEGV": "; a crash in native code", "BUS": "; a crash in native code",
           "ILL": "; an instruction this CPU lacks: check the build's target",
           "ABRT": "; an abort in native code"}.get(name, "")
    return f"SIG{name} ({number}{why})"


def describe_exit(status: int, sig: str | None) -> str:
    """How a remote command ended, for an error line: a signal, a shell's 128+N, or exit N."""
    if sig:
        return f"was killed by {describe_signal(sig)}"
    if 128 < status < 128 + 65:  # how a shell in between reports its child's signal
        try:
            name = signal.Signals(status - 128).name[3:]
        except ValueError:  # a real-time signal, or a plain exit status above 128
            return f"failed (exit {status})"
        return f"exited with status {status}, i.e. was killed by {describe_signal(name)}"
    return f"failed (exit {status})"


def _handle_exit_signal(chan: paramiko.Channel, m: paramiko.Message) -> None:
    """Channel requests, with "exit-signal" (RFC 4254 6.10) kept as chan.exit_signal: OpenSSH
    sends it instead of an exit status when the remote process dies by a signal, and paramiko
    (up to 5.x at least) drops it, leaving exit_status -1 as if the connection had broken."""
    start = m.packet.tell()
    if m.get_text() == "exit-signal":
        m.get_boolean()  # want reply: always false for exit-signal
        chan.exit_signal = m.get_text()  # the name without "SIG", e.g. "KILL"
        chan.status_event.set()  # the command is over, as with an exit status
        return
    m.packet.seek(start)
    paramiko.Channel._handle_request(chan, m)


def _watch_exit_signals(transport: paramiko.Transport) -> None:
    # paramiko dispatches channel messages through this table; an instance copy changes this
    # transport only
    transport._channel_handler_table = {**paramiko.Transport._channel_handler_table,
                                        MSG_CHANNEL_REQUEST: _handle_exit_signal}


class SSHSession:
    """One connection to a device (and the jump hosts it goes through): quoted commands with
    timeouts, and SFTP. saved_host_keys: the keys trusted on first use while connecting."""

    def __init__(self, device: Device, client: paramiko.SSHClient, jumps: list[paramiko.SSHClient] = (),
                 saved_host_keys: list[SavedHostKey] = ()):
        self.device, self.client = device, client
        self.jumps, self.saved_host_keys = list(jumps), list(saved_host_keys)
        self._sftp: paramiko.SFTPClient | None = None
        _watch_exit_signals(client.get_transport())

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
        for jump in reversed(self.jumps):  # the device's connection runs inside theirs
            jump.close()

    def __enter__(self) -> SSHSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, command: str) -> paramiko.Channel:
        """A channel running one (already quoted) command line."""
        chan = self.client.get_transport().open_session(timeout=self.device.connect_timeout_s)
        chan.exit_signal = None
        chan.exec_command(command)
        return chan

    def run(self, argv: list[str], timeout_s: float | None = None, cwd: str | None = None,
            env: dict[str, str] | None = None, on_stderr_line: Callable[[str], None] | None = None,
            check: bool = True) -> CommandResult:
        """Run argv on the device (every word shell-quoted) and wait at most timeout_s.

        The remote side runs under coreutils `timeout`, so a hanging command is killed on the
        device too, not only abandoned by us."""
        timeout_s = timeout_s or self.device.command_timeout_s
        command = remote_command(argv, timeout_s, cwd, env)
        started = time.monotonic()
        try:
            chan = self.start(command)
            out, err = _collect(chan, started + timeout_s + KILL_GRACE_S + 2, on_stderr_line)
        except _Deadline:
            raise self._timed_out(argv, timeout_s) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise lost_connection(self.device, exc) from None
        status, sig = chan.exit_status, chan.exit_signal
        # `timeout` exits 124 after its TERM; after its KILL it dies by KILL itself (137 through a shell)
        if status == 124 or (time.monotonic() - started >= timeout_s and (sig == "KILL" or status == 137)):
            raise self._timed_out(argv, timeout_s)
        if status == -1 and sig is None:
            raise lost_connection(self.device, EOFError("no exit status"))
        result = CommandResult(status, out, err, sig)
        if check and (status != 0 or sig):
            last = (err.strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"device {self.device.name!r}: `{shlex.join(argv)}` "
                            f"{describe_exit(status, sig)}: {last}")
        return result

    def _timed_out(self, argv: list[str], timeout_s: float) -> UserError:
        return UserError(f"device {self.device.name!r}: remote command timed out after {timeout_s:g} s "
                         f"and was killed: {shlex.join(argv)}")

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


PROXY_GRACE_S = 2.0  # a failed ProxyCommand's time to print its reason and exit


class _ProxyCommand(paramiko.ProxyCommand):
    """paramiko's ProxyCommand run as OpenSSH runs it: `exec COMMAND` by the user's shell (so
    pipes and quotes work), and an ended command read as a closed connection (paramiko's recv
    spins on the EOF until the banner timeout)."""

    def __init__(self, command: str):
        self.command = command
        super().__init__(shlex.join([os.environ.get("SHELL") or "/bin/sh", "-c", f"exec {command}"]))

    def recv(self, size: int) -> bytes:
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        if not ready:
            raise socket.timeout()
        return os.read(self.process.stdout.fileno(), size)  # b"" at the end: paramiko's EOFError

    def stderr_tail(self) -> str:
        """The command's last error line, once it has ended (e.g. nc's or ssh's complaint)."""
        if self.process.poll() is None:
            return ""
        lines = self.process.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"it exited with status {self.process.returncode}"

    def close(self, grace_s: float = 0.0) -> None:
        """grace_s: let a command that is ending finish first. A failing command often closes
        its stdout before it prints why (`exec nc ... >&2`): the EOF reaches us first, and a
        SIGTERM then would kill it before its message (seen under load)."""
        if grace_s:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace_s)
        if self.process.poll() is None:
            super().close()  # SIGTERM
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _proxy_socket(device: Device, ep: Endpoint, jumps: list[paramiko.SSHClient]) -> object | None:
    """What ep's SSH connection runs over: a ProxyCommand, a channel through a jump host (opened
    and appended to jumps), or None for a direct TCP connection."""
    if ep.proxy_command:
        try:
            return _ProxyCommand(ep.proxy_command)
        except (OSError, ValueError) as exc:
            raise UserError(f"device {device.name!r}: cannot start ProxyCommand `{ep.proxy_command}`: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
    if ep.jump is None:
        return None
    jump = _open_client(device, ep.jump, jumps, tofu=None)
    jumps.append(jump)
    try:
        return jump.get_transport().open_channel("direct-tcpip", (ep.hostname, ep.port), ("127.0.0.1", 0),
                                                 timeout=ep.connect_timeout_s)
    except (paramiko.ChannelException, paramiko.SSHException, OSError, EOFError) as exc:
        detail = getattr(exc, "text", None) or str(exc) or type(exc).__name__
        raise UserError(f"device {device.name!r}: {ep.jump.label} {ep.jump.hostname} cannot reach "
                        f"{ep.hostname}:{ep.port}: {detail}") from None


def _open_client(device: Device, ep: Endpoint, jumps: list[paramiko.SSHClient],
                 tofu: list[SavedHostKey] | None) -> paramiko.SSHClient:
    """A connected client with a verified host key; tofu: where keys trusted on first use are
    recorded, None to refuse unknown keys."""
    sock = _proxy_socket(device, ep, jumps)
    client = paramiko.SSHClient()
    for path in ep.known_hosts:
        if path.exists():
            client.load_system_host_keys(str(path))
    client.set_missing_host_key_policy(
        _TrustOnFirstUse(ep.known_hosts[-1], tofu) if tofu is not None else _RejectUnknown())
    # OpenSSH skips an IdentityFile that does not exist; paramiko would fail on it
    keys = [k for k in ep.key_files if Path(k).is_file()]
    try:
        client.connect(ep.hostname, port=ep.port, username=ep.user, key_filename=keys or None, sock=sock,
                       allow_agent=True, look_for_keys=not ep.key_files, timeout=ep.connect_timeout_s,
                       banner_timeout=ep.connect_timeout_s, auth_timeout=ep.connect_timeout_s)
    except BaseException as exc:
        client.close()
        if isinstance(sock, _ProxyCommand):
            sock.close(grace_s=PROXY_GRACE_S)
        raise _connect_error(device, ep, exc, keys, sock) from None
    return client


def _connect_error(device: Device, ep: Endpoint, exc: BaseException, keys: list[str],
                   sock: object | None) -> BaseException:
    """The UserError for a failed connect to ep (anything unexpected is passed on as it is)."""
    name = f"device {device.name!r}: {ep.label + ': ' if ep.label else ''}"
    if isinstance(exc, _UnknownHostKey):
        return UserError(
            f"{name}host key of {exc.name} is not known ({exc.key.get_name()} {fingerprint(exc.key)}); "
            f"verify it, then run `ssh-keyscan -p {ep.port} {ep.hostname} >> {ep.known_hosts[-1]}` "
            "(or ssh there once) to add it"
            + ("" if ep.label else ", or set trust_on_first_use: true in the device entry"))
    if isinstance(exc, paramiko.BadHostKeyException):
        return UserError(
            f"{name}HOST KEY OF {ep.hostkey_name} HAS CHANGED (now {exc.key.get_name()} "
            f"{fingerprint(exc.key)}, known as {fingerprint(exc.expected_key)}); this may be an attack. "
            f"If the host was reinstalled, remove the old key with `ssh-keygen -R '{ep.hostkey_name}'` "
            "and verify the new one")
    # paramiko says "No authentication methods available" (an SSHException) when it had no key to offer
    if isinstance(exc, paramiko.AuthenticationException) or "authentication methods" in str(exc):
        missing = [k for k in ep.key_files if k not in keys]
        tried = ", ".join(keys) or "ssh-agent and ~/.ssh/id_*"
        return UserError(f"{name}authentication to {ep.where} failed with {tried}"
                         + (f" (IdentityFile {', '.join(missing)} does not exist)" if missing else "")
                         + f" ({exc}); check the device's 'key' and the server's authorized_keys")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return UserError(f"{name}connecting to {ep.where} timed out after {ep.connect_timeout_s:g} s")
    if isinstance(exc, (OSError, paramiko.SSHException, EOFError)):
        detail = (sock.stderr_tail() if isinstance(sock, _ProxyCommand) else "") or \
            getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return UserError(f"{name}cannot connect to {ep.where}: {detail}")
    return exc


def connect(device: Device, ssh_config: Path | None = None) -> SSHSession:
    """An authenticated session with a verified host key (jump hosts' too), or a UserError
    saying what to do."""
    ep = resolve_endpoint(device, ssh_config)
    jumps: list[paramiko.SSHClient] = []
    saved: list[SavedHostKey] = []
    try:
        client = _open_client(device, ep, jumps, saved if device.trust_on_first_use else None)
    except BaseException:
        for jump in reversed(jumps):
            jump.close()
        raise
    return SSHSession(device, client, jumps, saved)


@dataclass
class UploadStats:
    uploaded: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)

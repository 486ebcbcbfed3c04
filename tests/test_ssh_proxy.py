"""~/.ssh/config as OpenSSH reads it: ProxyJump (through real jump sshds on 127.0.0.1, whose
DEBUG logs show each forwarding), ProxyCommand with its %-tokens, which of the two wins, and
the device entry's fields (port, proxy_jump, key) winning over the alias."""
from __future__ import annotations

import getpass
import shutil
import time
from pathlib import Path

import pytest

from harness.devices import load_devices
from harness.devices.ssh import connect, resolve_endpoint
from harness.errors import UserError
from tests.sshd import SSHServer, harness_cli, ssh_env

USER = getpass.getuser()


def jump_server(target: SSHServer, directory: Path) -> SSHServer:
    """A second sshd that accepts the target's client key and logs forwarding requests."""
    directory.mkdir(parents=True)
    for name in ("client_key", "client_key.pub"):
        shutil.copy(target.dir / name, directory / name)
    return SSHServer(directory, log_level="DEBUG1").start()


def forwarded_to(jump: SSHServer, port: int) -> bool:
    """Whether the jump sshd opened a direct-tcpip channel to 127.0.0.1:port."""
    return f"target 127.0.0.1 port {port}" in jump.log_path.read_text(errors="replace")


@pytest.fixture
def gw(sshd: SSHServer, tmp_path: Path):
    server = jump_server(sshd, tmp_path / "gw")
    yield server
    server.kill_all()


@pytest.fixture
def home(tmp_path: Path, monkeypatch, sshd: SSHServer) -> Path:
    """A HOME whose ~/.ssh/known_hosts knows the target (jump hosts are added by the tests)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd.known_hosts, home / ".ssh" / "known_hosts")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def know(home: Path, *servers: SSHServer) -> None:
    with open(home / ".ssh" / "known_hosts", "a") as f:
        for server in servers:
            f.write(server.known_hosts.read_text())


def ssh_config(home: Path, sshd: SSHServer, board: str, gw: SSHServer | None = None) -> None:
    """`board` (the target, with the given extra lines), `gw` (the jump host), and the key for all."""
    text = f"Host board\n  HostName 127.0.0.1\n  Port {sshd.port}\n{board}"
    if gw:
        text += f"Host gw\n  HostName 127.0.0.1\n  Port {gw.port}\n"
    text += f"Host *\n  User {USER}\n  IdentityFile {sshd.dir}/client_key\n"
    (home / ".ssh" / "config").write_text(text)


def board(sshd: SSHServer, tmp_path: Path, **fields):
    """The device entry for alias `board`: no port, key or known_hosts of its own unless given."""
    defaults = {"host": "board", "port": None, "user": None, "key": None, "known_hosts": None}
    devices = sshd.devices_file(tmp_path / "devices.yaml", **{**defaults, **fields})
    return load_devices(devices).get("loopback")


def test_proxy_jump_goes_through_the_jump_host(sshd: SSHServer, gw: SSHServer, home: Path, tmp_path: Path):
    know(home, gw)
    ssh_config(home, sshd, "  ProxyJump gw\n", gw)
    with connect(board(sshd, tmp_path)) as s:
        assert s.run(["echo", "ok"]).stdout == "ok\n"
        assert len(s.jumps) == 1
    assert forwarded_to(gw, sshd.port)
    gw.kill_all()  # without the jump host the board cannot be reached: the path really went through it
    with pytest.raises(UserError, match=r"jump host gw: cannot connect to .*127\.0\.0\.1:\d+"):
        connect(board(sshd, tmp_path))


def test_proxy_jump_chain_in_user_host_port_form(sshd: SSHServer, gw: SSHServer, home: Path, tmp_path: Path):
    second = jump_server(sshd, tmp_path / "gw2")
    try:
        know(home, gw, second)
        # gw2 is given as user@host:port; it is looked up in the config as 127.0.0.1 (Host *)
        ssh_config(home, sshd, f"  ProxyJump gw,{USER}@127.0.0.1:{second.port}\n", gw)
        with connect(board(sshd, tmp_path)) as s:
            assert s.run(["echo", "ok"]).stdout == "ok\n"
            assert len(s.jumps) == 2
        assert forwarded_to(gw, second.port) and not forwarded_to(gw, sshd.port)
        assert forwarded_to(second, sshd.port)
    finally:
        second.kill_all()


def test_jump_host_key_is_verified_even_with_trust_on_first_use(sshd: SSHServer, gw: SSHServer, home: Path,
                                                                 tmp_path: Path):
    ssh_config(home, sshd, "  ProxyJump gw\n", gw)  # gw's key is in no known_hosts file
    before = (home / ".ssh" / "known_hosts").read_text()
    with pytest.raises(UserError, match=rf"jump host gw: host key of \[127\.0\.0\.1\]:{gw.port} is not known"):
        connect(board(sshd, tmp_path, trust_on_first_use=True))
    assert (home / ".ssh" / "known_hosts").read_text() == before  # nothing trusted on first use
    assert not forwarded_to(gw, sshd.port)


def test_entry_port_and_proxy_jump_win_over_the_alias(sshd: SSHServer, gw: SSHServer, home: Path, tmp_path: Path):
    know(home, gw)
    # the alias points at a closed port through a failing ProxyCommand; the entry says otherwise
    (home / ".ssh" / "config").write_text(
        f"Host board\n  HostName 127.0.0.1\n  Port 1\n  ProxyCommand false\n"
        f"Host gw\n  HostName 127.0.0.1\n  Port {gw.port}\n"
        f"Host *\n  User {USER}\n  IdentityFile {sshd.dir}/client_key\n")
    with connect(board(sshd, tmp_path, port=sshd.port, proxy_jump="gw")) as s:
        assert s.run(["echo", "ok"]).stdout == "ok\n"
    assert forwarded_to(gw, sshd.port)
    # `port: 22` is a port given too: it wins over the alias's Port (it used to be ignored)
    assert resolve_endpoint(board(sshd, tmp_path, port=22)).port == 22
    assert resolve_endpoint(board(sshd, tmp_path)).port == 1
    assert resolve_endpoint(board(sshd, tmp_path, proxy_jump="none")).proxy_command is None


def test_proxy_command_with_tokens_through_ssh_w(sshd: SSHServer, gw: SSHServer, home: Path, tmp_path: Path):
    """The usual lab ProxyCommand: OpenSSH's own client forwarding through the gateway, with
    %r %h %p expanded as OpenSSH does (from User, HostName, and the entry's port)."""
    proxy = (f"ssh -F /dev/null -i {sshd.dir}/client_key -o IdentitiesOnly=yes -o BatchMode=yes "
             f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={gw.known_hosts} "
             f"-p {gw.port} -l %r -W %h:%p 127.0.0.1")
    ssh_config(home, sshd, f"  ProxyCommand {proxy}\n")
    device = board(sshd, tmp_path, port=sshd.port)
    assert resolve_endpoint(device).proxy_command.endswith(f"-l {USER} -W 127.0.0.1:{sshd.port} 127.0.0.1")
    with connect(device) as s:
        assert s.run(["echo", "ok"]).stdout == "ok\n"
    assert forwarded_to(gw, sshd.port)


def test_failing_proxy_command_is_one_clear_line(sshd: SSHServer, home: Path, tmp_path: Path):
    ssh_config(home, sshd, "  ProxyCommand echo 'gateway says: no route to %h' >&2; exit 3\n")
    started = time.monotonic()
    with pytest.raises(UserError, match=r"through ProxyCommand `echo .*`: gateway says: no route to 127\.0\.0\.1"):
        connect(board(sshd, tmp_path))
    assert time.monotonic() - started < 5  # seen as ended at once, not after the banner timeout
    # the CLI: one line, no traceback (paramiko's transport thread logs one of its own)
    proc = harness_cli(["devices", "check", "loopback", "--devices-file", str(tmp_path / "devices.yaml")],
                       ssh_env(home))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"harness: error: device 'loopback': cannot connect to {USER}@127.0.0.1:{sshd.port} through "
        "ProxyCommand `echo 'gateway says: no route to 127.0.0.1' >&2; exit 3`: gateway says: no route to 127.0.0.1"]


@pytest.mark.parametrize("first", ["ProxyJump", "ProxyCommand"])
def test_the_first_obtained_of_proxyjump_and_proxycommand_wins(first: str, sshd: SSHServer, home: Path,
                                                               tmp_path: Path):
    lines = {"ProxyJump": "  ProxyJump gw\n", "ProxyCommand": "  ProxyCommand nc %h %p\n"}
    later = next(k for k in lines if k != first)
    (home / ".ssh" / "config").write_text(f"Host board\n{lines[first]}Host *\n{lines[later]}")
    ep = resolve_endpoint(board(sshd, tmp_path))
    assert (ep.jump is not None, ep.proxy_command is not None) == (first == "ProxyJump", first == "ProxyCommand")


def test_a_missing_key_is_named(sshd: SSHServer, home: Path, tmp_path: Path):
    missing = tmp_path / "no_such_key"
    with pytest.raises(UserError, match=rf"key file {missing} \(the entry's 'key'\) does not exist"):
        connect(board(sshd, tmp_path, key=str(missing)))
    # an IdentityFile that does not exist is skipped, as OpenSSH does, and the next one used ...
    (home / ".ssh" / "config").write_text(
        f"Host board\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {USER}\n"
        f"  IdentityFile {missing}\n  IdentityFile {sshd.dir}/client_key\n")
    with connect(board(sshd, tmp_path)) as s:
        assert s.run(["true"]).exit_status == 0
    # ... and when none is left, the failure names it
    (home / ".ssh" / "config").write_text(
        f"Host board\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {USER}\n  IdentityFile {missing}\n")
    with pytest.raises(UserError, match=rf"authentication to .* \(IdentityFile {missing} does not exist\)"):
        connect(board(sshd, tmp_path))


def test_a_proxy_jump_loop_is_one_clear_line(sshd: SSHServer, home: Path, tmp_path: Path):
    (home / ".ssh" / "config").write_text("Host board\n  ProxyJump gw\nHost gw\n  ProxyJump board\n")
    with pytest.raises(UserError, match=r"ProxyJump chain longer than \d+ hops \(a loop in ~/\.ssh/config\?\)"):
        connect(board(sshd, tmp_path))


def test_proxy_jump_field_is_validated(sshd: SSHServer, tmp_path: Path):
    with pytest.raises(UserError, match=r"field 'proxy_jump': expected jump hosts like ssh -J"):
        board(sshd, tmp_path, proxy_jump="gw, other")

"""The SSH transport and remote runs against a real OpenSSH server on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.deploy.rundirs import claim_run_dir, sweep_stale_runs
from harness.deploy.ssh_run import UploadLog, upload_cached
from harness.devices import load_devices
from harness.devices.ssh import connect
from harness.errors import UserError
from tests.sshd import SSHServer, descendants, free_port, harness_cli, new_key, ssh_env

RUN = ["run", "--device", "loopback", "--model", "unet-tiny", "--builds", "torch,caffe2-nnpack",
       "--warmup", "1", "--repeats", "3"]


def loopback(server: SSHServer, tmp_path: Path, **overrides):
    return load_devices(server.devices_file(tmp_path / "devices.yaml", **overrides)).get("loopback")


def test_remote_run_matches_local_and_records_the_device(sshd: SSHServer, tmp_path: Path):
    env = ssh_env(tmp_path / "home")
    # One thread on both sides: on a shared, oversubscribed 2-core host, two-thread OpenMP
    # spinning makes single runs vary by 100x, which would say nothing about the transport.
    devices = sshd.devices_file(tmp_path / "devices.yaml", local={"cores": 1}, cores=1)
    remote = harness_cli([*RUN, "--devices-file", str(devices), "--output", str(tmp_path / "remote.json")], env)
    assert remote.returncode == 0, remote.stderr
    local = harness_cli([*RUN, "--devices-file", str(devices), "--device", "local",
                         "--output", str(tmp_path / "local.json")], env)
    assert local.returncode == 0, local.stderr
    r, loc = (json.loads((tmp_path / f).read_text()) for f in ("remote.json", "local.json"))
    assert r["device"]["name"] == "loopback" and r["device"]["transport"] == "ssh"
    assert r["complete"] is True and "noisy" in r and isinstance(r["warnings"], list)
    assert r["system"]["before"]["load_1m"] >= 0 and r["system"]["after"] is not None
    for rb, lb in zip(r["builds"], loc["builds"], strict=True):
        assert rb["name"] == lb["name"] and rb["status"] == lb["status"] == "ok"
        assert [(x["id"], x["impl"]) for x in rb["layers"]] == [(x["id"], x["impl"]) for x in lb["layers"]]
        # Same machine, same code: per-layer medians agree within the noise of a shared 2-core
        # host (other jobs come and go, so compare the typical layer, not one e2e number).
        ratios = [a["median_ms"] / b["median_ms"] for a, b in zip(rb["layers"], lb["layers"])]
        assert 0.1 < statistics.median(ratios) < 10
    assert list((sshd.workdir / "runs").iterdir()) == []  # the run directory was cleaned up


def test_upload_cache_skips_unchanged_content(sshd: SSHServer, tmp_path: Path):
    artifact = tmp_path / "model.so"
    artifact.write_bytes(b"\x7fELF pretend artifact " * 100)
    log = UploadLog()
    with connect(loopback(sshd, tmp_path)) as s:
        first = upload_cached(s, artifact, str(sshd.workdir / "cache"), log)
        second = upload_cached(s, artifact, str(sshd.workdir / "cache"), log)
        artifact.write_bytes(b"changed")
        third = upload_cached(s, artifact, str(sshd.workdir / "cache"), log)
    assert first == second != third
    assert log.uploaded == ["model.so", "model.so"] and log.cached == ["model.so"]
    assert Path(third).read_bytes() == b"changed"


def test_remote_arguments_are_quoted(sshd: SSHServer, tmp_path: Path):
    marker = tmp_path / "injected"
    with connect(loopback(sshd, tmp_path)) as s:
        out = s.run(["echo", f"a  b; touch {marker}", "$HOME", "'q'"]).stdout
    assert out == f"a  b; touch {marker} $HOME 'q'\n"
    assert not marker.exists()


def test_ssh_config_alias_and_trust_on_first_use(sshd: SSHServer, tmp_path: Path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host mybox\n  HostName 127.0.0.1\n  Port {sshd.port}\n  IdentityFile {sshd.dir}/client_key\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    saved = home / ".ssh" / "known_hosts"
    tofu = loopback(sshd, tmp_path, host="mybox", port=None, key=None, known_hosts=None, trust_on_first_use=True)
    with connect(tofu) as s:
        assert s.run(["true"]).exit_status == 0
    assert saved.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    strict = loopback(sshd, tmp_path, host="mybox", port=None, key=None, known_hosts=None)
    with connect(strict) as s:  # the saved key is now verified like any known host
        assert s.run(["echo", "ok"]).stdout == "ok\n"


def test_command_timeout_kills_the_remote_command(sshd: SSHServer, tmp_path: Path):
    with connect(loopback(sshd, tmp_path)) as s:
        with pytest.raises(UserError, match="timed out after 1 s and was killed"):
            s.run(["sh", "-c", f"echo $$ > {tmp_path}/pid; sleep 60"], timeout_s=1)
    pid = int((tmp_path / "pid").read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_missing_dependency_says_what_and_how(sshd: SSHServer, tmp_path: Path):
    """A device python without numpy: the runner names it and the pip command."""
    import sys  # noqa: PLC0415

    bare = tmp_path / "bare"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(bare)], check=True)
    devices = sshd.devices_file(tmp_path / "devices.yaml", python=str(bare / "bin" / "python"))
    proc = harness_cli([*RUN, "--devices-file", str(devices), "--output", str(tmp_path / "r.json")],
                       ssh_env(tmp_path / "home"))
    assert proc.returncode == 2
    assert "missing dependency 'numpy'" in proc.stderr and "pip install numpy" in proc.stderr
    assert not (tmp_path / "r.json").exists()


# --- failures: each is one clear line, exit 2, and leaves earlier results as they were ----------

def _earlier_results(out_dir: Path) -> dict[Path, bytes]:
    out_dir.mkdir()
    # target.json, the run's --output, does not exist: a failed run must not create it (an
    # existing --output is refused before measuring, see tests/test_reliability.py).
    files = {out_dir / "earlier.json": b'{"complete": true, "earlier": 1}\n',
             out_dir / "other.json": b'{"complete": true, "earlier": 2}\n'}
    for path, data in files.items():
        path.write_bytes(data)
    return files


def _assert_clean_failure(proc, expected: str, earlier: dict[Path, bytes]) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("harness: error: ") and expected in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr
    out_dir = next(iter(earlier)).parent
    assert {p: p.read_bytes() for p in out_dir.iterdir()} == earlier  # nothing new, nothing changed


def _fail_run(server: SSHServer, tmp_path: Path, extra_args: list[str] = (), **overrides):
    earlier = _earlier_results(tmp_path / "results")
    devices = server.devices_file(tmp_path / "devices.yaml", **overrides)
    args = [*RUN, *extra_args, "--devices-file", str(devices), "--output", str(tmp_path / "results" / "target.json")]
    return earlier, args


@pytest.mark.parametrize("case", ["wrong key", "unknown host key", "changed host key", "refused connection"])
def test_connection_failures(case: str, sshd: SSHServer, tmp_path: Path, monkeypatch, capsys):
    overrides, expected = {
        "wrong key": ({"key": str(new_key(tmp_path / "other_key"))}, "authentication to"),
        "unknown host key": ({"known_hosts": str(tmp_path / "empty_known_hosts")}, "is not known"),
        "changed host key": ({"known_hosts": str(tmp_path / "stale_known_hosts")}, "HAS CHANGED"),
        "refused connection": ({"port": free_port()}, "cannot connect to"),
    }[case]
    stale = new_key(tmp_path / "old_host_key").with_suffix(".pub").read_text().split()[:2]
    (tmp_path / "stale_known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {' '.join(stale)}\n")
    earlier, args = _fail_run(sshd, tmp_path, **overrides)
    for key, value in ssh_env(tmp_path / "home").items():  # in-process: no torch import per case
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    code = main(args)
    proc = subprocess.CompletedProcess(args, code, "", capsys.readouterr().err)
    _assert_clean_failure(proc, expected, earlier)
    if case == "unknown host key":
        assert "ssh-keyscan" in proc.stderr and "trust_on_first_use" in proc.stderr
    if case == "changed host key":
        assert "attack" in proc.stderr and "ssh-keygen -R" in proc.stderr


def test_run_past_its_timeout_is_killed(sshd: SSHServer, tmp_path: Path):
    earlier, args = _fail_run(sshd, tmp_path, ["--repeats", "1000000"], command_timeout_s=4)
    proc = harness_cli(args, ssh_env(tmp_path / "home"))
    _assert_clean_failure(proc, "timed out after 4 s and was killed", earlier)
    assert list((sshd.workdir / "runs").iterdir()) == []


def test_server_killed_in_the_middle_of_a_run(fresh_sshd: SSHServer, tmp_path: Path):
    earlier, args = _fail_run(fresh_sshd, tmp_path, ["--repeats", "1000000"])
    runs = fresh_sshd.workdir / "runs"

    def kill_when_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(runs.glob("*/request.json")):
            time.sleep(0.1)
        time.sleep(1.5)  # the runner is importing or measuring by now
        fresh_sshd.kill_all()

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    proc = harness_cli(args, ssh_env(tmp_path / "home"))
    killer.join()
    _assert_clean_failure(proc, "lost the SSH connection", earlier)


def test_a_build_that_cannot_be_exported_is_recorded_failed_and_the_others_run(sshd: SSHServer, tmp_path: Path):
    from harness.deploy.ssh_run import run_over_ssh  # noqa: PLC0415
    from harness.model import get_model  # noqa: PLC0415
    from harness.runner.measure import Settings  # noqa: PLC0415

    options = {"tvm-nnpack": {"force": {"enc1.conv2": "nnpack:nosuch/compute"}}}
    out = run_over_ssh(loopback(sshd, tmp_path), get_model("unet-tiny"), ["tvm-nnpack", "torch"],
                       Settings(0, 2), options, lambda *a: None)
    assert [b["name"] for b in out["builds"]] == ["tvm-nnpack", "torch"]
    failed, ok = out["builds"]
    assert failed["status"] == "failed" and "invalid implementation 'nnpack:nosuch/compute'" in failed["message"]
    assert ok["status"] == "ok" and len(ok["layers"]) == len(get_model("unet-tiny"))


def test_several_devices_run_in_parallel_each_to_its_own_result(sshd: SSHServer, tmp_path: Path):
    env = ssh_env(tmp_path / "home")
    devices = sshd.devices_file(tmp_path / "devices.yaml", cores=1)
    text = devices.read_text()
    # a second device on the same server, under another name and work directory
    import yaml  # noqa: PLC0415

    doc = yaml.safe_load(text)
    doc["devices"]["loopback2"] = {**doc["devices"]["loopback"], "workdir": str(sshd.workdir / "second")}
    devices.write_text(yaml.safe_dump(doc))
    results = tmp_path / "results"
    proc = harness_cli(["run", "--devices-file", str(devices), "--device", "loopback,loopback2",
                        "--model", "unet-tiny", "--builds", "torch", "--repeats", "3", "--warmup", "0"],
                       {**env, "HARNESS_RESULTS_DIR": str(results)})
    assert proc.returncode == 0, proc.stderr
    written = [line.split("result written to ")[1] for line in proc.stdout.splitlines() if "result written to" in line]
    docs = [json.loads(Path(p).read_text()) for p in written]
    assert sorted(d["device"]["name"] for d in docs) == ["loopback", "loopback2"]
    a, b = docs
    # the two measurement windows overlap: the devices ran at the same time
    assert a["started_utc"] < b["created_utc"] and b["started_utc"] < a["created_utc"]
    assert all(d["builds"][0]["status"] == "ok" for d in docs)


def test_output_with_several_devices_is_refused(sshd: SSHServer, tmp_path: Path):
    devices = sshd.devices_file(tmp_path / "devices.yaml")
    proc = harness_cli(["run", "--devices-file", str(devices), "--device", "loopback,local",
                        "--output", str(tmp_path / "x.json")], ssh_env(tmp_path / "home"))
    assert proc.returncode == 2 and "--output names one file" in proc.stderr


# --- how remote commands end: signals are named, not mistaken for a lost connection ------------

def test_remote_command_killed_by_a_signal_is_named(sshd: SSHServer, tmp_path: Path):
    with connect(loopback(sshd, tmp_path)) as s:
        killed = s.run(["sh", "-c", "kill -SEGV $$"], check=False)
        assert (killed.exit_status, killed.signal) == (-1, "SEGV")  # OpenSSH's exit-signal, kept
        with pytest.raises(UserError, match=r"`sh -c 'kill -KILL \$\$'` was killed by SIGKILL \(signal 9; "
                                            r"the kernel's OOM killer"):
            s.run(["sh", "-c", "kill -KILL $$"])
        # a shell in between reports its child's signal as 128+N
        with pytest.raises(UserError, match=r"exited with status 137, i\.e\. was killed by SIGKILL"):
            s.run(["sh", "-c", "sh -c 'kill -KILL $$'; exit $?"])
        assert s.run(["sh", "-c", "exit 3"], check=False).exit_status == 3
        assert s.run(["echo", "still connected"]).stdout == "still connected\n"


def _runner_pid(server: SSHServer) -> int | None:
    for pid in descendants(server.proc.pid):
        try:
            if b"harness.runner" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            pass
    return None


def test_runner_killed_by_a_signal_is_reported_as_such(sshd: SSHServer, tmp_path: Path):
    """As the OOM killer does: SIGKILL to the on-device runner in the middle of measuring."""
    earlier, args = _fail_run(sshd, tmp_path, ["--repeats", "1000000"])
    killed: list[int] = []

    def kill_runner() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            pid = _runner_pid(sshd)
            if pid and list((sshd.workdir / "runs").glob("*/request.json")):
                time.sleep(1.5)  # importing or measuring by now
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_runner)
    killer.start()
    proc = harness_cli(args, ssh_env(tmp_path / "home"))
    killer.join()
    assert killed
    _assert_clean_failure(proc, "the on-device runner was killed by SIGKILL (signal 9; the kernel's OOM killer",
                          earlier)
    assert "lost the SSH connection" not in proc.stderr
    assert list((sshd.workdir / "runs").iterdir()) == []  # the connection lived: the run folder is gone


# --- nothing silent: keys trusted on first use are reported, broken runs' folders removed -------

def test_trust_on_first_use_says_what_it_saved(sshd: SSHServer, tmp_path: Path, monkeypatch, capsys):
    home = tmp_path / "home"
    for key, value in ssh_env(home).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    devices = sshd.devices_file(tmp_path / "devices.yaml", known_hosts=None, trust_on_first_use=True)
    expected = subprocess.run(["ssh-keygen", "-lf", str(sshd.dir / "host_key.pub")], capture_output=True,
                              text=True, check=True).stdout.split()[1]
    with connect(load_devices(devices).get("loopback")) as s:
        [saved] = s.saved_host_keys
    assert (saved.host, saved.key_type, saved.fingerprint) == (f"[127.0.0.1]:{sshd.port}", "ssh-ed25519", expected)
    assert saved.path == home / ".ssh" / "known_hosts" and saved.path.exists()
    # the CLI prints it, once, for a key it saves; a known key says nothing
    saved.path.unlink()
    assert main(["devices", "check", "loopback", "--devices-file", str(devices)]) == 0
    err = capsys.readouterr().err
    assert (f"harness: trusted on first use: saved the host key of [127.0.0.1]:{sshd.port} (ssh-ed25519 "
            f"{expected}) to {saved.path}") in err
    assert main(["devices", "check", "loopback", "--devices-file", str(devices)]) == 0
    assert "trusted on first use" not in capsys.readouterr().err


def _age(path: Path, seconds: float = 3600) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_sweep_removes_only_run_folders_no_run_holds(sshd: SSHServer, tmp_path: Path):
    runs = sshd.workdir / "sweep-runs"
    device = loopback(sshd, tmp_path)
    with connect(device) as a, connect(device) as b:
        active = claim_run_dir(a, str(runs / "active"))  # another run, e.g. from another host
        assert json.loads((runs / "active" / "owner.json").read_text())["pid"] == os.getpid()
        (runs / "broken").mkdir()  # a run that lost its connection: nobody holds its lock
        (runs / "broken" / "request.json").write_text("{}")
        (runs / "starting").mkdir()  # a run of the last minute may not hold its lock yet
        for name in ("active", "broken"):
            _age(runs / name)
        assert sweep_stale_runs(b, str(runs)) == ["broken"]
        assert sorted(p.name for p in runs.iterdir()) == ["active", "starting"]
        active.close()  # that run ends without removing its folder (its connection broke)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sweep_stale_runs(b, str(runs)) != ["active"]:
            time.sleep(0.2)
        assert sorted(p.name for p in runs.iterdir()) == ["starting"]


def test_the_run_after_a_broken_one_removes_its_folder(fresh_sshd: SSHServer, tmp_path: Path):
    earlier, args = _fail_run(fresh_sshd, tmp_path, ["--repeats", "1000000"])
    runs = fresh_sshd.workdir / "runs"

    def kill_when_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(runs.glob("*/request.json")):
            time.sleep(0.1)
        time.sleep(1.5)
        fresh_sshd.kill_all()

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    proc = harness_cli(args, ssh_env(tmp_path / "home"))
    killer.join()
    _assert_clean_failure(proc, "lost the SSH connection", earlier)
    [left] = list(runs.iterdir())  # the broken run could not clean up after itself
    _age(left)
    again = SSHServer(fresh_sshd.dir, port=fresh_sshd.port).start()
    try:
        devices = again.devices_file(tmp_path / "devices.yaml", cores=1)
        proc = harness_cli(["run", "--device", "loopback", "--model", "unet-tiny", "--builds", "torch",
                            "--warmup", "0", "--repeats", "1", "--devices-file", str(devices),
                            "--output", str(tmp_path / "next.json")], ssh_env(tmp_path / "home"))
        assert proc.returncode == 0, proc.stderr
        assert f"removed 1 run folder(s) left by broken runs from {runs}: {left.name}" in proc.stderr
        assert list(runs.iterdir()) == []
    finally:
        again.kill_all()

"""`harness devices check` and `harness devices setup` against a real loopback sshd."""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from tests.sshd import SSHServer, harness_cli, ssh_env

FAKE_VCGENCMD = """#!/bin/sh
# FAKE vcgencmd for tests: no Raspberry Pi here. Prints what a hot, throttled Pi prints.
case "$1" in
  measure_temp) echo "temp=83.5'C" ;;
  get_throttled) echo "throttled=0x50005" ;;
  *) exit 1 ;;
esac
"""


def test_check_over_ssh_reports_the_device(sshd: SSHServer, tmp_path: Path):
    devices = sshd.devices_file(tmp_path / "devices.yaml")
    proc = harness_cli(["devices", "check", "loopback", "--devices-file", str(devices)], ssh_env(tmp_path / "home"))
    assert proc.returncode == 0, proc.stderr
    assert "yes (ssh)" in proc.stdout
    assert f"cores       │ {len(os.sched_getaffinity(0))}" in proc.stdout
    assert importlib.metadata.version("numpy") in proc.stdout  # the device's python is this venv
    assert importlib.metadata.version("apache-tvm") in proc.stdout


def test_check_reads_temperature_and_throttling_from_vcgencmd(tmp_path: Path):
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    (fake_bin / "vcgencmd").write_text(FAKE_VCGENCMD)
    (fake_bin / "vcgencmd").chmod(0o755)
    env = ssh_env(tmp_path / "home")
    env["PATH"] = f"{fake_bin}:{env['PATH']}"
    proc = harness_cli(["devices", "check", "local"], env)
    assert proc.returncode == 0, proc.stderr
    assert "83.5 C" in proc.stdout and "0x50005" in proc.stdout
    assert "reports throttling (0x50005)" in proc.stdout and "the device is hot (83.5 C)" in proc.stdout


def test_setup_creates_workdir_and_venv(sshd: SSHServer, tmp_path: Path):
    venv, work = tmp_path / "device-venv", tmp_path / "device-work"
    devices = sshd.devices_file(tmp_path / "devices.yaml", python=str(venv / "bin" / "python"), workdir=str(work))
    proc = harness_cli(["devices", "setup", "loopback", "--packages", "", "--devices-file", str(devices)],
                       ssh_env(tmp_path / "home"))
    assert (venv / "bin" / "python").exists() and (work / "cache").is_dir()
    assert "created the virtualenv" in proc.stdout
    # The fresh venv sees only the system's packages: the check after setup either reports
    # them or says exactly what is missing and how to install it.
    if proc.returncode != 0:
        assert proc.returncode == 2 and "install it: pip install" in proc.stderr, proc.stderr
    else:
        assert "yes (ssh)" in proc.stdout


def test_setup_installs_packages_with_the_device_python(sshd: SSHServer, tmp_path: Path):
    devices = sshd.devices_file(tmp_path / "devices.yaml")
    # Already installed in the device's python (this venv): pip needs no network to say so.
    proc = harness_cli(["devices", "setup", "loopback", "--packages", "numpy,pyyaml", "--devices-file", str(devices)],
                       ssh_env(tmp_path / "home"))
    assert proc.returncode == 0, proc.stderr
    assert "installing on the device: numpy pyyaml" in proc.stdout and "yes (ssh)" in proc.stdout

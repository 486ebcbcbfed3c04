"""Run folders on a device (workdir/runs/<run id>): claimed while a run lives, removed when a
run broke off and left one behind.

A run holds a shared flock(1) on its folder's .lock from a remote process that lives as long as
the run's SSH connection (claim_run_dir). A run that broke off leaves its folder with the lock
free; the next run on the board removes such folders (sweep_stale_runs), never one whose lock is
held, whichever host or process holds it: a lock on the device needs no host's clock or pid.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import posixpath
import shlex
import socket

import paramiko

from harness.devices.ssh import SSHSession, describe_exit
from harness.errors import UserError

logger = logging.getLogger(__name__)
# A claim lasts the command timeout plus this (for the uploads before it), should the board's
# sshd not notice a dead connection; the lock is released then.
UPLOAD_ALLOWANCE_S = 3600

# Run as `sh -c SWEEP sweep RUNS_DIR`. A folder younger than a minute is left alone: a run that
# is starting may not hold its lock yet. rm runs under the exclusive lock, so a run cannot take
# the folder back half-removed.
SWEEP = """cd "$1" 2>/dev/null || exit 0
for d in *; do
    [ -d "$d" ] && [ -n "$(find "$d" -maxdepth 0 -mmin +1)" ] || continue
    flock --exclusive --nonblock "$d/.lock" rm -rf -- "$d" && echo "$d"
done
exit 0"""


def sweep_stale_runs(s: SSHSession, runs_dir: str) -> list[str]:
    """Remove the run folders that no run holds any more (left by broken runs); their names."""
    result = s.run(["sh", "-c", SWEEP, "sweep", runs_dir], timeout_s=s.device.connect_timeout_s * 3,
                   check=False)
    if result.exit_status == 127 or "flock: not found" in result.stderr:
        raise UserError(f"device {s.device.name!r}: `flock` is missing on the device; install util-linux")
    removed = result.stdout.split()
    if removed:
        logger.info("device %r: removed %d run folder(s) left by broken runs from %s: %s",
                    s.device.name, len(removed), runs_dir, ", ".join(removed))
    return removed


def claim_run_dir(s: SSHSession, run_dir: str) -> paramiko.Channel:
    """Create run_dir and hold its lock from a remote process that ends with this connection
    (or when the channel is closed): while it lives, no other run removes the folder."""
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    hold_s = round(s.device.command_timeout_s + UPLOAD_ALLOWANCE_S)
    command = " && ".join([
        shlex.join(["mkdir", "-p", "--", posixpath.dirname(run_dir)]),
        shlex.join(["mkdir", "--", run_dir]), shlex.join(["cd", "--", run_dir]),
        shlex.join(["printf", "%s\\n", owner]) + " > owner.json",
        "exec " + shlex.join(["timeout", str(hold_s), "flock", "--shared", "--nonblock", ".lock",
                              "sh", "-c", "echo locked && exec cat"])])
    chan = s.sftp_call(f"claim {run_dir}", lambda: s.start(command))
    chan.settimeout(s.device.connect_timeout_s)
    try:
        line = chan.makefile("rb").readline()
    except (OSError, EOFError) as exc:
        raise UserError(f"device {s.device.name!r}: cannot claim the run folder {run_dir}: {exc}") from None
    if line.strip() != b"locked":
        chan.status_event.wait(s.device.connect_timeout_s)  # its error output comes before its end
        err = (chan.recv_stderr(4096) if chan.recv_stderr_ready() else b"").decode(errors="replace")
        err = err.strip() or describe_exit(chan.exit_status, chan.exit_signal)
        hint = "; install util-linux (flock) on the device" if "flock" in err else ""
        raise UserError(f"device {s.device.name!r}: cannot claim the run folder {run_dir}: {err}{hint}")
    return chan

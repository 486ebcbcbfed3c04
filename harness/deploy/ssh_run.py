"""A run on a device over SSH: stage on the host, upload (skipping what the device already has),
run the on-device runner with live progress, fetch its JSON, clean up.

Remote layout under the device's workdir:
  cache/<sha256><suffix>    every uploaded file, named by its content hash and keeping its
                            suffix (TVM's load_module picks its loader from the resolved
                            file's suffix: a bare hash is "Failed to get file format")
  runs/<run id>/            one directory per run, removed afterwards:
    .lock, owner.json, request.json, result.json,
    artifacts/<build>/<file> -> ../../../cache/<sha256><suffix>
    reference.npy -> the host's fp32 reference output (the device needs no PyTorch for it)
  (.lock and owner.json: harness/deploy/rundirs.py, which also removes folders of broken runs)
"""
from __future__ import annotations

import collections
import datetime as dt
import io
import json
import posixpath
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.deploy.package import sha256_file, write_harness_zip
from harness.deploy.rundirs import claim_run_dir, sweep_stale_runs
from harness.devices.config import Device
from harness.devices.ssh import SSHSession, connect, describe_exit
from harness.errors import UserError
from harness.model.layers import LayerTable
from harness.runner.measure import Settings
from harness.runner.request import REFERENCE_FILE, request_to_json

Progress = Callable[[str, str, int, int], None]
EXIT_RUNNER_ERROR = 3  # harness.runner.__main__.EXIT_ERROR


@dataclass
class Staged:
    harness_zip: Path
    artifacts: dict[str, list[Path]]  # build -> files, under root/<build>/
    root: Path
    reference: Path  # the fp32 reference output, .npy
    # The device probes (clock, FMA) cross-compiled for a foreign device: the probe's environment
    # variable -> its binary, shipped beside the request and named to the runner by that variable.
    probes: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # build -> why its export failed

    def runnable(self, builds: list[str]) -> list[str]:
        """The builds to run on the device; fails only if none is left."""
        left = [b for b in builds if b not in self.failed]
        if not left:
            raise UserError("no build could be exported for the device: "
                            + "; ".join(f"{b}: {m}" for b, m in self.failed.items()))
        return left

    def with_failed(self, output: dict[str, Any], builds: list[str]) -> dict[str, Any]:
        """The device's output with the builds that failed on the host put back, in order:
        a build that cannot be exported is recorded as failed and the others still run."""
        from harness.runner.run import failed_record  # noqa: PLC0415

        by_name = {b["name"]: b for b in output["builds"]}
        by_name.update({b: failed_record(b, m) for b, m in self.failed.items()})
        return {**output, "builds": [by_name[b] for b in builds if b in by_name]}


@dataclass
class UploadLog:
    uploaded: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


def stage(device: Device, table: LayerTable, builds: list[str], options: dict[str, dict[str, Any]],
          out_dir: Path) -> Staged:
    """Export every build's artifacts for the device (cross-compiled where the build does so)."""
    from harness.builds import get_build  # noqa: PLC0415 - imports torch
    from harness.builds.base import BuildContext  # noqa: PLC0415
    from harness.model.weights import make_input, make_weights  # noqa: PLC0415
    from harness.runner.run import reference_output, save_reference  # noqa: PLC0415

    root = out_dir / "artifacts"
    weights = make_weights(table)
    reference = save_reference(out_dir / REFERENCE_FILE, reference_output(table, weights, make_input(table)))
    artifacts: dict[str, list[Path]] = {}
    failed: dict[str, str] = {}
    for name in builds:
        build_dir = root / name
        build_dir.mkdir(parents=True)
        ctx = BuildContext(table, weights, device, options.get(name, {}), device.cores)
        try:
            build = get_build(name)
            # Nothing to export for a build the device's runner will record as unavailable or unsupported.
            skip = build.unavailable(device) or build.unsupported(table)
            artifacts[name] = [] if skip else build.export(ctx, build_dir)
        except Exception as exc:  # noqa: BLE001 - recorded as this build's failure, the run goes on
            failed[name] = f"exporting for device {device.name!r} failed: {type(exc).__name__}: {exc}"
    return Staged(write_harness_zip(out_dir), artifacts, root, reference, failed=failed,
                  probes=cross_probes(device, out_dir))


def cross_probes(device: Device, out_dir: Path) -> dict[str, Path]:
    """The device probes (clock, FMA) built by the device's cross compiler (static: no libc to
    match), for a device of another arch: {environment variable: binary}. Empty where there is
    no cross compiler; the device then compiles them itself, or records why its clock and FMA
    throughput are unknown."""
    import platform  # noqa: PLC0415
    import shutil  # noqa: PLC0415

    from harness.devices.clock import CLOCK_PROBE  # noqa: PLC0415
    from harness.devices.cprobe import compile_probe  # noqa: PLC0415
    from harness.devices.fma import FMA_PROBE  # noqa: PLC0415

    if device.arch == platform.machine() or not device.cross_compiler:
        return {}
    cc = device.cross_compiler.removesuffix("g++") + "gcc"
    if shutil.which(cc) is None:
        return {}
    built = {}
    for probe in (CLOCK_PROBE, FMA_PROBE):
        exe = out_dir / probe.shipped_name
        if compile_probe(probe, cc, device.arch, exe, static=True) is None:
            built[probe.env] = exe
    return built


def cache_name(local: Path) -> str:
    """<sha256 of the content><the file's suffix>, e.g. 3f...9a.so."""
    return sha256_file(local) + local.suffix


def upload_cached(s: SSHSession, local: Path, cache_dir: str, log: UploadLog) -> str:
    """The remote path of `local`'s content, uploading it only if the device lacks it."""
    remote = posixpath.join(cache_dir, cache_name(local))
    size = local.stat().st_size
    try:
        if s.sftp.stat(remote).st_size == size:
            log.cached.append(local.name)
            return remote
    except FileNotFoundError:
        pass
    part = f"{remote}.{secrets.token_hex(4)}.part"  # renamed into place: never half a cache entry
    s.sftp_call(f"upload {local.name}", lambda: s.sftp.put(str(local), part))
    s.sftp_call(f"upload {local.name}", lambda: s.sftp.posix_rename(part, remote))
    log.uploaded.append(local.name)
    return remote


def run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


class RunnerOutput:
    """Reads the runner's stderr: progress lines to the bars, an error line kept, the rest tailed."""

    def __init__(self, progress: Progress):
        self.progress, self.error, self.tail = progress, None, collections.deque(maxlen=20)

    def __call__(self, line: str) -> None:
        msg = None
        if line.startswith("{"):
            try:
                msg = json.loads(line)
            except ValueError:
                msg = None
        if isinstance(msg, dict) and isinstance(msg.get("progress"), list) and len(msg["progress"]) == 4:
            self.progress(*msg["progress"])
        elif isinstance(msg, dict) and isinstance(msg.get("error"), str):
            self.error = msg["error"]
        elif line.strip():
            self.tail.append(line.strip())


def upload_run(s: SSHSession, staged: Staged, run_dir: str, request: dict[str, Any], log: UploadLog) -> str:
    """Put the harness, the artifacts and the request in place; returns the harness zip's path."""
    cache = posixpath.join(s.device.workdir, "cache")
    build_dirs = [posixpath.join(run_dir, "artifacts", b) for b in staged.artifacts]
    s.run(["mkdir", "-p", "--", cache, *build_dirs], timeout_s=s.device.connect_timeout_s * 3)
    harness = upload_cached(s, staged.harness_zip, cache, log)
    for build, files in staged.artifacts.items():
        for path in files:
            rel = path.relative_to(staged.root / build).as_posix()
            if "/" in rel:
                s.run(["mkdir", "-p", "--", posixpath.join(run_dir, "artifacts", build, posixpath.dirname(rel))],
                      timeout_s=s.device.connect_timeout_s * 3)
            target = upload_cached(s, path, cache, log)
            s.sftp_call(f"link {rel}", lambda t=target, b=build, r=rel:
                        s.sftp.symlink(t, posixpath.join(run_dir, "artifacts", b, r)))
    ref = upload_cached(s, staged.reference, cache, log)
    s.sftp_call(f"link {REFERENCE_FILE}", lambda: s.sftp.symlink(ref, posixpath.join(run_dir, REFERENCE_FILE)))
    for exe in staged.probes.values():
        probe = upload_cached(s, exe, cache, log)
        s.sftp_call(f"chmod {exe.name}", lambda p=probe: s.sftp.chmod(p, 0o755))
        s.sftp_call(f"link {exe.name}", lambda p=probe, e=exe: s.sftp.symlink(p, posixpath.join(run_dir, e.name)))
    body = json.dumps(request).encode()
    s.sftp_call("upload request.json", lambda: s.sftp.putfo(io.BytesIO(body), posixpath.join(run_dir, "request.json")))
    return harness


def fetch_json(s: SSHSession, path: str) -> dict[str, Any]:
    def read() -> bytes:
        with s.sftp.open(path, "rb") as f:
            return f.read()
    raw = s.sftp_call(f"fetch {path}", read)
    try:
        doc = json.loads(raw)
    except ValueError:
        raise UserError(f"device {s.device.name!r}: the runner's result {path} is not valid JSON") from None
    if not isinstance(doc, dict) or not {"system", "builds", "environment", "settings"} <= set(doc):
        raise UserError(f"device {s.device.name!r}: the runner's result {path} is incomplete")
    return doc


def execute(s: SSHSession, run_dir: str, harness_zip: str, progress: Progress,
            probes: dict[str, Path] | None = None) -> dict[str, Any]:
    """Run the on-device runner; `probes` (environment variable -> shipped binary) are named to
    it by their variables, as links in the run directory."""
    out = RunnerOutput(progress)
    env = {"PYTHONPATH": harness_zip,
           **{var: posixpath.join(run_dir, exe.name) for var, exe in (probes or {}).items()}}
    result = s.run([s.device.python, "-m", "harness.runner", "--request", "request.json",
                    "--output", "result.json"], cwd=run_dir, env=env,
                   on_stderr_line=out, check=False)
    if result.exit_status != 0 or result.signal:
        why = out.error or (out.tail[-1] if out.tail else "no output")
        if result.exit_status == 127:
            why = f"{s.device.python!r} not found; fix the device's 'python' or run `harness devices setup {s.device.name}`"
        ended = describe_exit(result.exit_status, result.signal)
        raise UserError(f"device {s.device.name!r}: the on-device runner {ended}"
                        + (f"; its last output: {why}" if result.signal else f": {why}"))
    return fetch_json(s, posixpath.join(run_dir, "result.json"))


def run_over_ssh(device: Device, table: LayerTable, builds: list[str], settings: Settings,
                 options: dict[str, dict[str, Any]], progress: Progress,
                 log: UploadLog | None = None) -> dict[str, Any]:
    """The runner's output (system, environment, settings, builds) from a run on the device."""
    log = log if log is not None else UploadLog()
    with connect(device) as s, tempfile.TemporaryDirectory(prefix="harness-stage-") as tmp:
        staged = stage(device, table, builds, options, Path(tmp))  # after connecting: fail fast
        request = request_to_json(table.config.name, device, staged.runnable(builds), settings, options,
                                  "artifacts", REFERENCE_FILE)
        runs = posixpath.join(device.workdir, "runs")
        sweep_stale_runs(s, runs)
        run_dir = posixpath.join(runs, run_id())
        claim = claim_run_dir(s, run_dir)
        try:
            harness_zip = upload_run(s, staged, run_dir, request, log)
            output = execute(s, run_dir, harness_zip, progress, staged.probes)
            return staged.with_failed(output, builds)
        finally:
            cleanup(s, run_dir)
            claim.close()


def cleanup(s: SSHSession, run_dir: str) -> None:
    try:
        s.run(["rm", "-rf", "--", run_dir], timeout_s=s.device.connect_timeout_s * 3, check=False)
    except UserError:
        pass  # the connection is gone: the run's error is what to report, not this

"""One build per process on the device: a crash (SIGILL, SIGSEGV, the OOM killer's SIGKILL) takes
down that build's process only. It is recorded on that build, naming the signal, and the other
builds still run.

The child is the same runner (`python -m harness.runner --only BUILD`) reading the same request
and the same reference (.npy); it writes its one build record as JSON to a file. JSON and .npy
only, never pickle. Its progress lines go straight to the parent's stderr (and so to the host).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Callable

CRASH_HINTS = {
    # PyPI's torch 2.13.0 for aarch64 (the CUDA build) uses ARMv8.1 LSE atomics in
    # libnvpl_blas_core; a Cortex-A72/A53 (ARMv8.0) has none.
    "SIGILL": "an instruction this CPU does not have{armv80}",
    "SIGSEGV": "a segmentation fault in native code",
    "SIGBUS": "a bus error (misaligned or unmapped memory) in native code",
    "SIGKILL": "killed, most likely by the kernel's out-of-memory killer (check `dmesg`)",
    "SIGABRT": "aborted by native code (an assertion or an uncaught C++ exception)",
}
ARMV80_HINT = ("; on ARMv8.0 (Cortex-A72/A53) this torch wheel needs ARMv8.1 atomics (LSE): the CPU-only "
               "aarch64 wheel (torch==2.9.1 on PyPI, or PyTorch's own CPU index) avoids it")


def cpu_has_lse() -> bool | None:
    """Whether /proc/cpuinfo lists ARMv8.1 atomics; None off aarch64 or without cpuinfo."""
    import platform  # noqa: PLC0415

    if platform.machine() != "aarch64":
        return None
    from harness.devices.peaks import read_cpuinfo  # noqa: PLC0415

    info = read_cpuinfo()
    return "atomics" in info.get("Features", "").split() if info else None


def signal_message(build: str, returncode: int, torch_loaded: bool) -> str:
    """What a build's crash is recorded as: the signal, and what it usually means."""
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = CRASH_HINTS.get(name, "")
    armv80 = ARMV80_HINT if name == "SIGILL" and torch_loaded and cpu_has_lse() is False else ""
    hint = hint.format(armv80=armv80)
    return f"the build's process died of {name}" + (f": {hint}" if hint else "")


def child_env(build_env: dict[str, str], runtime_only: bool) -> dict[str, str]:
    """The parent's environment with the harness importable (the device runs it from a zip)
    and the build's own process environment (builds.PROCESS_ENV) on top."""
    import harness  # noqa: PLC0415

    root = str(Path(harness.__file__).resolve().parents[1]) if ".zip" not in harness.__file__ \
        else harness.__file__.split(".zip")[0] + ".zip"
    path = os.environ.get("PYTHONPATH", "")
    # A device only loads modules the host compiled: TVM's runtime library alone is enough, and
    # loading it instead of the compiler halves `import tvm` on a slow core (39 s vs 67 s
    # under qemu on a Cortex-A76). A local run's children compile, so they need the compiler.
    runtime = {"TVM_USE_RUNTIME_LIB": "1"} if runtime_only else {}
    return {**runtime, **os.environ, **build_env,
            "PYTHONPATH": root + (os.pathsep + path if path else "")}


def forward_progress(stream: IO[str], progress: Callable[[str, str, int, int], None]) -> None:
    """The child's stderr: its progress lines go to the parent's progress, the rest through."""
    for line in stream:
        try:
            found = json.loads(line) if line.startswith("{") else None
        except ValueError:
            found = None
        if isinstance(found, dict) and isinstance(found.get("progress"), list) and len(found["progress"]) == 4:
            progress(*found["progress"])
        else:
            sys.stderr.write(line)
            sys.stderr.flush()


def run_isolated(build: str, request: Path, reference: Path, timeout_s: float | None, needs_torch: bool,
                 build_env: dict[str, str], runtime_only: bool,
                 progress: Callable[[str, str, int, int], None]) -> dict[str, Any] | str:
    """The build's record from a child process, or why there is none (a one-line message)."""
    with tempfile.TemporaryDirectory(prefix="harness-build-") as tmp:
        out = Path(tmp) / "record.json"
        argv = [sys.executable, "-m", "harness.runner", "--request", str(request), "--only", build,
                "--reference", str(reference), "--output", str(out)]
        try:
            child = subprocess.Popen(argv, env=child_env(build_env, runtime_only), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        except OSError as exc:
            return f"could not start the build's process ({sys.executable}): {exc}"
        reader = threading.Thread(target=forward_progress, args=(child.stderr, progress), daemon=True)
        reader.start()
        try:
            returncode = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            return f"the build's process did not finish within {timeout_s:g} s and was killed"
        finally:
            reader.join(timeout=5)
        if returncode < 0:
            return signal_message(build, returncode, needs_torch)
        if returncode != 0 or not out.exists():
            return f"the build's process exited with status {returncode} and wrote no record"
        try:
            record = json.loads(out.read_text())
        except ValueError:
            return "the build's process wrote a record that is not JSON"
    return record if isinstance(record, dict) and record.get("name") == build else "the build's record is malformed"

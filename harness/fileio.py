"""Atomic file writes. Standard library only: the on-device runner and the tuning database use
it too, and a device must not need the host's result-schema libraries (jsonschema) to run."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str | bytes, exclusive: bool = False) -> None:
    """Write via a temporary file in the same directory and move it into place, so a reader
    (or a crash) sees the old file or the new one, never half of either.

    exclusive: never replace an existing file. The complete temporary file is hard-linked to
    `path`, which fails with FileExistsError if anything is there, however many writers race
    (a rename would silently replace the other writer's file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results and reports from a web server
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

"""Result files: one JSON document per run, written atomically, versioned and migrated.

`schema_version` is an integer owned by this module. A file of an older version is migrated
step by step (MIGRATIONS[v] turns version v into v + 1); a newer one is refused, since this
harness cannot know what it would drop. Anything unreadable is one UserError naming the file.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import secrets
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import jsonschema

from harness.errors import UserError
from harness.fileio import write_atomic
from harness.names import SAFE_NAME_RULE, is_safe_name
from harness.userfiles import read_user_text

SCHEMA_VERSION = 3
# HARNESS_RESULTS_DIR moves the results tree (tests, or a shared results disk).
RESULTS_DIR = Path(os.environ.get("HARNESS_RESULTS_DIR") or Path(__file__).resolve().parents[2] / "results")
RUNS_SUBDIR = "runs"  # results/ is also asv's results_dir; ours live apart from its machines


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(resources.files("harness.results").joinpath("schema.json").read_text())


def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    """v1 recorded the device state once, before the run; v2 records it before and after."""
    doc["system"] = {"before": doc["system"], "after": None}
    doc.setdefault("complete", True)  # v1 wrote files only for finished runs
    return doc


def _v2_to_v3(doc: dict[str, Any]) -> dict[str, Any]:
    """v3 records the machine's fingerprint; a v2 file's machine is unknown, and an unknown
    machine is never compared with a fingerprinted one (harness.results.fingerprint)."""
    from harness.results.fingerprint import unknown_fingerprint  # noqa: PLC0415 - store stays light

    doc.setdefault("fingerprint", unknown_fingerprint())
    return doc


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}


def migrate(doc: dict[str, Any], source: str = "result") -> dict[str, Any]:
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{source}: not a harness result file (no integer 'schema_version')")
    if version > SCHEMA_VERSION:
        raise UserError(f"{source}: schema_version {version} is newer than this harness reads "
                        f"({SCHEMA_VERSION}); upgrade the harness")
    doc = copy.deepcopy(doc)
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise UserError(f"{source}: schema_version {version} is too old to migrate")
        doc = MIGRATIONS[version](doc)
        version += 1
        doc["schema_version"] = version
    return doc


def validate(doc: dict[str, Any], source: str = "result") -> None:
    try:
        jsonschema.validate(doc, schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise UserError(f"{source}: invalid result at {where}: {exc.message}") from None


def load_result(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    text = read_user_text(path, "result file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: corrupt result file, not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise UserError(f"{path}: corrupt result file, nested too deeply") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a harness result file (not a JSON object)")
    doc = migrate(doc, str(path))
    validate(doc, str(path))
    return doc


def _write_new(doc: dict[str, Any], path: Path) -> Path:
    """Validate and write `doc` as a new file; FileExistsError if `path` is taken."""
    validate(doc, str(path))
    try:
        write_atomic(path, json.dumps(doc, indent=1) + "\n", exclusive=True)
    except FileExistsError:
        raise
    except OSError as exc:
        raise UserError(f"{path}: cannot write result file: {exc.strerror or exc}") from None
    return path


def save_result(doc: dict[str, Any], path: Path | str) -> Path:
    """Write a new result file; an existing file is never replaced (results are records)."""
    path = Path(path)
    try:
        return _write_new(doc, path)
    except FileExistsError:
        raise UserError(f"{path}: a result file of that name exists; it is kept, and nothing was written "
                        "(choose another --output)") from None


def save_new_result(doc: dict[str, Any], root: Path = RESULTS_DIR) -> Path:
    """Write the result under its default path. Should another run have taken that name (same
    microsecond, same random bits), draw a new run id rather than replace its file."""
    doc.setdefault("run_id", new_run_id(doc["created_utc"]))
    for _ in range(8):
        try:
            return _write_new(doc, default_result_path(doc, root))
        except FileExistsError:
            doc["run_id"] = new_run_id(doc["created_utc"])
    raise UserError(f"{default_result_path(doc, root).parent}: could not find a free result file name")


def check_writable(path: Path | str) -> None:
    """Fail before a long measurement, not after it, if the result cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: cannot write result file: it is a directory")
    if path.exists() or path.is_symlink():
        raise UserError(f"{path}: a file of that name exists; results are never overwritten "
                        "(choose another --output)")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"{path}: cannot write result file: {parent} is not a writable directory")


def new_run_id(created_utc: str) -> str:
    """A run's id: its creation time to the microsecond plus 24 random bits, so that runs
    started at the same moment (six at once into one folder) never share a name.
    "2026-12-02T10:15:30.123456Z" -> "20261202T101530.123456Z-3f9a0c"."""
    stamp = created_utc.replace("-", "").replace(":", "")
    return f"{stamp}-{secrets.token_hex(3)}"


def _path_part(text: str, what: str) -> str:
    """A name from a result document as one path component; anything else is refused
    (a device named '../../x' must not write outside the results folder)."""
    if not is_safe_name(text):
        raise UserError(f"{what} {text!r} cannot be used in a file name: it must be {SAFE_NAME_RULE}")
    return text


def default_result_path(doc: dict[str, Any], root: Path = RESULTS_DIR) -> Path:
    run = doc.get("run_id") or new_run_id(doc["created_utc"])
    commit = (doc["harness"].get("commit") or "nocommit")[:12]
    device = _path_part(doc["device"]["name"], "device name")
    model = _path_part(doc["model"]["name"], "model name")
    return root / RUNS_SUBDIR / device / f"{_path_part(run, 'run id')}_{commit}_{model}.json"


def find_results(root: Path = RESULTS_DIR) -> list[Path]:
    return sorted((root / RUNS_SUBDIR).glob("*/*.json"))

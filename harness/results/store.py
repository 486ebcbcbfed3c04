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
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import jsonschema

from harness.errors import UserError
from harness.fileio import write_atomic  # noqa: F401 - re-exported for its callers

SCHEMA_VERSION = 2
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


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


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
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: result file not found") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: corrupt result file, not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read result file: {exc}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a harness result file (not a JSON object)")
    doc = migrate(doc, str(path))
    validate(doc, str(path))
    return doc


def save_result(doc: dict[str, Any], path: Path | str) -> Path:
    validate(doc, str(path))
    path = Path(path)
    try:
        write_atomic(path, json.dumps(doc, indent=1) + "\n")
    except OSError as exc:
        raise UserError(f"{path}: cannot write result file: {exc.strerror or exc}") from None
    return path


def check_writable(path: Path | str) -> None:
    """Fail before a long measurement, not after it, if the result cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: cannot write result file: it is a directory")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"{path}: cannot write result file: {parent} is not a writable directory")


def default_result_path(doc: dict[str, Any], root: Path = RESULTS_DIR) -> Path:
    stamp = doc["created_utc"].replace("-", "").replace(":", "").split(".")[0].rstrip("Z") + "Z"
    commit = (doc["harness"].get("commit") or "nocommit")[:12]
    return root / RUNS_SUBDIR / doc["device"]["name"] / f"{stamp}_{commit}_{doc['model']['name']}.json"


def find_results(root: Path = RESULTS_DIR) -> list[Path]:
    return sorted((root / RUNS_SUBDIR).glob("*/*.json"))

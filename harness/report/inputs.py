"""Which result files a report is about: given files, a commit, or a commit range A..B.

Commits are resolved with git in the harness checkout (so branch names and short hashes work);
a hexadecimal prefix that git does not know (results made in another clone) matches stored
results by prefix. Results are found with harness.results.store.find_results and matched on
each file's harness.commit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.errors import UserError
from harness.results.document import REPO, git
from harness.results.store import find_results, load_result

HEX = re.compile(r"^[0-9a-fA-F]{4,40}$")


@dataclass(frozen=True)
class Found:
    path: Path
    commit: str | None
    device: str
    model: str
    created: str


def resolve_commit(ref: str, repo: Path = REPO) -> str:
    """Full hash of `ref`, or `ref` itself as a hash prefix when git does not know it."""
    sha = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", repo=repo)
    if sha:
        return sha
    if HEX.match(ref):
        return ref.lower()
    raise UserError(f"{ref}: not a commit of {repo} (and not a commit hash)")


def commit_range(spec: str, repo: Path = REPO) -> tuple[str, str, list[str] | None]:
    """A..B -> (A, B, [A, the commits after A up to B] oldest first), or None for the list when
    git cannot list it (commits from another clone). A is included: it is the point the range
    is compared against."""
    start, sep, end = spec.partition("..")
    if not sep or not start or not end:
        raise UserError(f"{spec}: a commit range is written A..B")
    a, b = resolve_commit(start, repo), resolve_commit(end, repo)
    listed = git("rev-list", "--reverse", f"{a}..{b}", repo=repo)
    return a, b, None if listed is None else [a, *listed.split()]


def stored_results(root: Path) -> list[Found]:
    found = []
    for path in find_results(root):
        doc: dict[str, Any] = load_result(path)
        found.append(Found(path, doc["harness"].get("commit"), doc["device"]["name"],
                           doc["model"]["name"], doc["created_utc"]))
    return sorted(found, key=lambda f: f.created)


def _matches(commit: str | None, wanted: str) -> bool:
    return commit is not None and commit.lower().startswith(wanted.lower())


def _one(found: list[Found], attr: str, wanted: str | None, what: str) -> list[Found]:
    if wanted is not None:
        found = [f for f in found if getattr(f, attr) == wanted]
    names = sorted({getattr(f, attr) for f in found})
    if len(names) > 1:
        raise UserError(f"results for {what} are on several {attr}s ({', '.join(names)}); "
                        f"choose one with --{attr}")
    return found


def results_for_commits(commits: Sequence[str], root: Path, device: str | None = None,
                        model: str | None = None, what: str = "these commits",
                        stored: list[Found] | None = None) -> list[Found]:
    """Stored results of `commits` (full hashes or prefixes) for one device and model, oldest
    first. `stored`: stored_results(root), when the caller already has it."""
    stored = stored_results(root) if stored is None else stored
    found = [f for f in stored if any(_matches(f.commit, c) for c in commits)]
    found = _one(_one(found, "device", device, what), "model", model, what)
    if not found:
        raise UserError(f"no stored results for {what} under {root}"
                        + (f" on device {device}" if device else "")
                        + (f" for model {model}" if model else "")
                        + "; run `harness run` at that commit first")
    return found


def results_in_range(spec: str, root: Path, device: str | None = None,
                     model: str | None = None) -> list[Found]:
    """Stored results of the commits A..B (A included), oldest first. Where git cannot list
    the range, it is every result measured from A's first run to B's last one."""
    a, b, commits = commit_range(spec)
    what = f"commits {spec}"
    if commits is not None:
        return results_for_commits(commits, root, device, model, what)
    stored = stored_results(root)  # every file is read and validated: once
    ends = results_for_commits([a, b], root, device, model, what, stored)
    first = min((f.created for f in ends if _matches(f.commit, a)), default=None)
    last = max((f.created for f in ends if _matches(f.commit, b)), default=None)
    if first is None or last is None:
        raise UserError(f"{spec}: git does not know this range and there are no stored results "
                        f"for {a if first is None else b} to bound it by time")
    device, model = ends[0].device, ends[0].model
    return [f for f in stored if f.device == device and f.model == model
            and first <= f.created <= last]


def newest_commit(found: list[Found]) -> list[Path]:
    """The files of the most recently measured commit among `found`."""
    last = found[-1].commit
    return [f.path for f in found if f.commit == last]


def side(text: str, root: Path, device: str | None, model: str | None) -> tuple[str, list[Path]]:
    """One side of a comparison: a result file, or a commit's stored results; (label, files)."""
    path = Path(text)
    if path.is_file():
        return path.stem, [path]
    sha = resolve_commit(text)
    return sha[:12], newest_commit(results_for_commits([sha], root, device, model, f"commit {text}"))

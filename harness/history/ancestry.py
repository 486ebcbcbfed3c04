"""Commit order from git, not from the clock: what came before what in the code.

The commit measured last is not the code's predecessor (a backfilled old commit, a branch);
the history is ordered topologically (ancestors first) and the nightly compares HEAD with its
nearest MEASURED ancestor. Commits git does not know (results from another clone) leave the
order to the clock, for all of them: a partly topological order would mislead more.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Sequence

from harness.results.document import REPO, git


def is_ancestor(a: str, b: str, repo: Path = REPO) -> bool | None:
    """Whether commit `a` is an ancestor of (or equal to) `b`; None when git cannot tell."""
    try:
        proc = subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=repo,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {0: True, 1: False}.get(proc.returncode)


def topological(commits: Sequence[str], repo: Path = REPO) -> list[str] | None:
    """`commits` (full hashes) ancestors first, or None when git does not know one of them."""
    unique = list(dict.fromkeys(commits))
    if not unique:
        return []
    listed = git("rev-list", "--topo-order", "--reverse", *unique, repo=repo)
    if listed is None:
        return None
    rank = {sha: i for i, sha in enumerate(listed.split())}
    if any(c not in rank for c in unique):
        return None
    return sorted(unique, key=rank.__getitem__)


def nearest_measured_ancestor(head: str, measured: Sequence[str], repo: Path = REPO) -> str | None:
    """The measured commit closest to `head` among its proper ancestors; None if none is."""
    wanted = set(measured) - {head}
    listed = git("rev-list", "--topo-order", head, repo=repo)
    for sha in (listed or "").split():
        if sha in wanted:
            return sha
    return None

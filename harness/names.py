"""The one rule for names that become path components: device names (results/runs/<device>/,
reports/<device>/, tuning/<device>/, asv machines), model names and run ids in file names.

Letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64: no name can be
'..', hold a '/', or look like terminal markup. results/schema.json states the same pattern.
"""
from __future__ import annotations

import re

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SAFE_NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_safe_name(text: str) -> bool:
    return SAFE_NAME.fullmatch(text) is not None


def check_known(names: list[str], known, what: str) -> list[str]:
    """`names`, each one of `known` and each once; else one UserError line (builds, models)."""
    from harness.errors import UserError  # noqa: PLC0415

    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown {what} {unknown[0]!r}; known {what}s: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise UserError(f"a {what} is named twice in {','.join(names)}")
    return names

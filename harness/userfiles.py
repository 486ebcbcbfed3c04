"""Reading files the user hands the harness (devices.yaml, result files, tuning databases,
SSH keys...): every read goes through here, so every failure is one UserError line naming the
file and what is wrong with it, never an OSError or UnicodeDecodeError traceback."""
from __future__ import annotations

from pathlib import Path

from harness.errors import UserError


def _why(exc: OSError) -> str:
    if isinstance(exc, IsADirectoryError):
        return "it is a directory, not a file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc) or type(exc).__name__


def read_user_bytes(path: Path | str, what: str, hint: str = "") -> bytes:
    """The file's bytes; `what` names it in the error ("devices file", "result file")."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found{hint}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what}: {_why(exc)}") from None


def read_user_text(path: Path | str, what: str, hint: str = "") -> str:
    """The file as UTF-8 text; a binary or mis-encoded file is a clear error, not a traceback."""
    data = read_user_bytes(path, what, hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot read {what}: not UTF-8 text (byte {exc.start} is "
                        f"0x{data[exc.start]:02x}); is it the right file?") from None

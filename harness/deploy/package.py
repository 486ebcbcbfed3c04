"""The harness package as one zip the device imports from (zipimport), and content hashes.

The zip is byte-for-byte reproducible (sorted entries, fixed timestamps), so its hash only
changes when the code does and the device's upload cache can skip it.
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # harness/
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_files(root: Path = PACKAGE_DIR) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix in (".py", ".json"))


def harness_zip(root: Path = PACKAGE_DIR) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in package_files(root):
            info = zipfile.ZipInfo(f"harness/{path.relative_to(root).as_posix()}", FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def write_harness_zip(out_dir: Path) -> Path:
    data = harness_zip()
    path = out_dir / f"harness-{hashlib.sha256(data).hexdigest()[:16]}.zip"
    path.write_bytes(data)
    return path

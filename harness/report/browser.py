"""Headless Chromium for report screenshots (and the flags the browser tests share).

Uses the system's Chromium (Debian's `chromium`, installed by scripts/setup.sh --dev) from its
command line, so taking a screenshot needs no Python package beyond the harness.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.errors import UserError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Quiet, offline, reproducible: no first-run UI, no background fetches, no GPU.
FLAGS = ["--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
TIMEOUT_S = 120


def chromium_path() -> str:
    for name in CANDIDATES:
        if found := shutil.which(name):
            return found
    raise UserError("no Chromium found (looked for " + ", ".join(CANDIDATES) + "); "
                    "install it with scripts/setup.sh --dev")


def sandbox_flags() -> list[str]:
    """Chromium refuses to run as root with its sandbox on."""
    return ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 2200) -> Path:
    """A PNG of the top `height` pixels of `page` rendered at `width`."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="harness-chromium-") as profile:
        tmp = png.with_name(f".{png.name}.tmp.png")
        cmd = [chromium_path(), *FLAGS, *sandbox_flags(), f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--screenshot={tmp}",
               Path(page).resolve().as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise UserError(f"Chromium took over {TIMEOUT_S} s to screenshot {page}") from None
        if done.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"Chromium could not screenshot {page}: {detail}")
        os.replace(tmp, png)
    return png

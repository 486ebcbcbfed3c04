"""A steady heap for measuring: freed memory is kept and reused, never returned and faulted in again.

Why: glibc's malloc serves large blocks (a UNet activation is megabytes) with mmap above a
threshold it moves at run time, and trims the heap's top when enough is free. Either way a
layer's output buffer is sometimes fresh pages from the kernel, and writing them costs a page
fault per 4 KiB. Measured on this project's VMs (Zen 5, 2 threads), the first UNet convolution
(3->32, 256x256, an 8 MiB output) took 0.7-1.0 ms with the heap kept and 2-5.7 ms without it,
bimodally, with the mixture changing from process to process: a run-level shift of up to 3x
that no statistic can tell from a regression. An inference service reuses its buffers (TVM's
VM pools them; PyTorch's CPU tuning guides use jemalloc or tcmalloc), so a kept heap is the
deployed cost, and the page faults were the allocator's noise, not the kernel's time.

`keep_heap()` fixes glibc's two thresholds with mallopt in the calling process (before the
builds allocate), and says what it did; every result records that in `environment.allocator`,
and the software fingerprint carries it, so a history that spans the change says so.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2); larger values are
# refused. Blocks above it are still mmapped: a tensor over 32 MiB pays its faults.
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30  # never trim below 1 GiB of free heap top, in practice never


def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None


def keep_heap() -> dict[str, Any]:
    """Fix glibc malloc's thresholds in this process; what was set, or why nothing was."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return {"kind": "default", "note": "not glibc: the allocator's thresholds are left as they are"}
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    version = libc.gnu_get_libc_version().decode()
    mmap_threshold = MMAP_THRESHOLD if ctypes.sizeof(ctypes.c_void_p) == 8 else MMAP_THRESHOLD // 2
    ok = libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        return {"kind": "default", "note": f"glibc {version} refused mallopt: thresholds left as they are"}
    return {"kind": "glibc-kept-heap", "glibc": version, "mmap_threshold": mmap_threshold,
            "trim_threshold": TRIM_THRESHOLD}


def describe(allocator: dict[str, Any] | None) -> str:
    """One word for the fingerprint's software list: what the heap did during the run."""
    return (allocator or {}).get("kind", "default")

"""Measured memory bandwidth: the roofline's memory ceiling.

A STREAM-style copy: numpy copies a buffer much larger than any cache of these boards (or of a
Zen3 host's L3), split over one thread per core (numpy releases the GIL while it copies), and
each pass counts as reading and writing the buffer once (2 x bytes), as STREAM's Copy does.
Raw pass times are kept; GB/s is derived from their median when read.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

METHOD = "numpy copy, one thread per core, 2 x buffer bytes per pass (STREAM Copy)"


def measure_memory_bandwidth(threads: int, buffer_mib: int = 64, warmup: int = 1,
                             repeats: int = 7) -> dict[str, Any] | None:
    """Time `repeats` copies of a `buffer_mib` MiB buffer; None if the board cannot spare it."""
    try:
        src = np.ones(buffer_mib * 2**20 // 8, dtype=np.float64)
        dst = np.empty_like(src)
    except MemoryError:
        return None
    threads = max(1, threads)
    bounds = np.linspace(0, src.size, threads + 1).astype(int)
    chunks = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    samples_s = []
    with ThreadPoolExecutor(threads) as pool:
        for i in range(warmup + repeats):
            start = time.perf_counter_ns()
            list(pool.map(lambda c: np.copyto(*c), chunks))
            elapsed = (time.perf_counter_ns() - start) / 1e9
            if i >= warmup:
                samples_s.append(elapsed)
    bytes_per_pass = 2 * src.nbytes
    return {"method": METHOD, "threads": threads, "bytes_per_pass": bytes_per_pass,
            "samples_s": samples_s, "gb_s": bytes_per_pass / float(np.median(samples_s)) / 1e9}


def bandwidth_gb_s(system: dict[str, Any]) -> float | None:
    """GB/s from a result's system block, recomputed from the raw pass times; None if absent."""
    mb = system.get("memory_bandwidth")
    if not mb:
        return None
    return mb["bytes_per_pass"] / float(np.median(mb["samples_s"])) / 1e9

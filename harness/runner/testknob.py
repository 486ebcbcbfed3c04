"""TEST KNOB, for the regression tests only: make chosen layers slower on purpose.

HARNESS_TEST_SLOW_LAYER="enc1.conv2=5.0[,other.layer=ms][,build/layer=ms]" busy-waits that many
milliseconds per pass for each named layer, of every build or only of the build named before a
slash, in plain (whole-network) and instrumented passes alike, so a commit
that turns it on is a real, measurable regression of exactly those layers. COMMITTED is the value
used when the variable is unset: the tests set it in a commit of a scratch clone, which ties
the slowdown to that commit the way a real code change would be. Never set either in
production: results measured with it are not the network's times.

The busy-wait runs once per pass, after the build's own pass, on the same clock; its measured
duration is added to the layer's own measured time. Doing it inside the layer would need a hook
in every build's executable (eager, TVM VM, ...); this wrapper serves every build unchanged.
"""
from __future__ import annotations

import os
import time

import numpy as np

from harness.errors import UserError
from harness.runner.measure import Clock, Executable

ENV = "HARNESS_TEST_SLOW_LAYER"
COMMITTED = ""


def slow_layers(text: str | None = None, build: str | None = None) -> dict[str, float]:
    """{layer id: extra ms per pass} of `build` from the knob (an item without a build applies
    to every build); {} when it is off."""
    text = os.environ.get(ENV, COMMITTED) if text is None else text
    slow: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, ms = item.partition("=")
        scope, _, layer = name.strip().rpartition("/")
        try:
            value = float(ms) if sep else float("nan")
        except ValueError:
            value = float("nan")
        if not sep or not value >= 0 or not layer:
            raise UserError(f"{ENV}: expected [build/]layer=milliseconds[,...], got {item!r}")
        if not scope or scope == build:
            slow[layer] = value
    return slow


def busy_wait(ms: float, clock: Clock = time.perf_counter_ns) -> None:
    end = clock() + int(ms * 1e6)
    while clock() < end:
        pass


class SlowedExecutable:
    """Wraps any Executable; adds a measured busy-wait per pass for each knob layer."""

    def __init__(self, exe: Executable, slow: dict[str, float]):
        self.exe, self.slow = exe, slow

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.exe.run(x)
        busy_wait(sum(self.slow.values()))
        return out

    def run_timed(self, x: np.ndarray, clock: Clock) -> tuple[np.ndarray, dict[str, int]]:
        out, times = self.exe.run_timed(x, clock)
        for layer, ms in self.slow.items():
            if layer in times:
                t0 = clock()
                busy_wait(ms, clock)
                times[layer] += clock() - t0
        return out, times

    def impl(self, layer_id: str) -> str:
        return self.exe.impl(layer_id)


def with_test_knob(exe: Executable, build: str | None = None) -> Executable:
    slow = slow_layers(build=build)
    return SlowedExecutable(exe, slow) if slow else exe

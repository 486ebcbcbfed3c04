"""The timing loop: warm-ups, then repeats of whole-network and per-layer timings.

Whole-network samples come from plain runs, with no per-layer instrumentation in the way;
per-layer samples from instrumented runs. Raw nanosecond samples are kept; medians and rates
are derived later. The clock is injected so the loop can be tested with a fake one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

Clock = Callable[[], int]


class Executable(Protocol):
    """What a build produces: something that runs the network, plainly or layer by layer."""

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def run_timed(self, x: np.ndarray, clock: Clock) -> tuple[np.ndarray, dict[str, int]]:
        """One instrumented pass: the output and each layer's elapsed clock ticks (ns)."""
        ...

    def impl(self, layer_id: str) -> str: ...


@dataclass(frozen=True)
class Settings:
    warmup: int = 2
    repeats: int = 10

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError("warmup must be >= 0 and repeats >= 1")


@dataclass
class Samples:
    e2e_ns: list[int] = field(default_factory=list)
    layers_ns: dict[str, list[int]] = field(default_factory=dict)


def measure(exe: Executable, x: np.ndarray, settings: Settings, clock: Clock = time.perf_counter_ns,
            on_step: Callable[[], None] | None = None, build: str | None = None) -> Samples:
    """Time `exe` (of `build`) on `x`. on_step is called once per timed or warm-up pass (for progress)."""
    from harness.runner.testknob import with_test_knob  # noqa: PLC0415 - it imports this module

    exe = with_test_knob(exe, build)  # a no-op unless the regression tests' knob is on
    step = on_step or (lambda: None)
    for _ in range(settings.warmup):
        exe.run(x)
        exe.run_timed(x, clock)
        step()
    samples = Samples()
    for _ in range(settings.repeats):
        t0 = clock()
        exe.run(x)
        samples.e2e_ns.append(clock() - t0)
        _, per_layer = exe.run_timed(x, clock)
        for layer_id, ns in per_layer.items():
            samples.layers_ns.setdefault(layer_id, []).append(ns)
        step()
    return samples


def steps(settings: Settings) -> int:
    return settings.warmup + settings.repeats

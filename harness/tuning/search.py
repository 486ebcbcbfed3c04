"""A bounded, resumable search: measure candidates per workload, saving after each one.

The budget is a number of candidates per workload (--trials) and/or a wall-clock deadline
(--minutes). Candidates already in the database are never measured again, so stopping (by
budget or Ctrl-C) and re-running continues where the last run stopped.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from harness.model.layers import Layer
from harness.tuning.database import Candidate, TuningDatabase

# progress(workload label, candidates done so far, candidates planned)
SearchProgress = Callable[[str, int, int], None]


@dataclass
class Task:
    workload: str
    layer: Layer
    space: list[dict[str, Any]]  # candidate parameters, most promising first
    measure: Callable[[dict[str, Any]], list[float]]  # -> raw samples in ms; raises if the
    #                                                    candidate fails to build, run or verify


@dataclass(frozen=True)
class Budget:
    trials: int | None = None  # candidates per workload, counting earlier runs'
    deadline: float | None = None  # time.monotonic() after which no candidate starts

    @classmethod
    def of(cls, trials: int | None, minutes: float | None) -> Budget:
        return cls(trials, time.monotonic() + 60 * minutes if minutes else None)

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def planned(db: TuningDatabase, task: Task, budget: Budget) -> list[dict[str, Any]]:
    record = db.records.get(task.workload)
    done = record.measured() if record else set()
    todo = [p for p in task.space if Candidate(p).key not in done]
    if budget.trials is not None:
        todo = todo[: max(0, budget.trials - len(done))]
    return todo


def run_search(db: TuningDatabase, tasks: list[Task], budget: Budget,
               progress: SearchProgress | None = None) -> bool:
    """Measure what the budget allows; returns False if the deadline stopped it early."""
    progress = progress or (lambda *a: None)
    plans = [(task, planned(db, task, budget)) for task in tasks]
    total, done = sum(len(todo) for _, todo in plans), 0
    for task, todo in plans:
        for params in todo:
            if budget.expired():
                return False
            progress(task.layer.id, done, total)
            db.add(task.workload, task.layer.id, len(task.space), measure_candidate(task, params))
            db.save()
            done += 1
    progress("", done, total)
    return True


def measure_candidate(task: Task, params: dict[str, Any]) -> Candidate:
    try:
        return Candidate(params, task.measure(params))
    except Exception as exc:  # noqa: BLE001 - a candidate that fails is a result: record why
        return Candidate(params, None, traceback.format_exception_only(type(exc), exc)[-1].strip()[:500])

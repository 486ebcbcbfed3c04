"""A bounded, resumable search: measure candidates per workload, saving after each one.

The budget is a number of candidates per workload (--trials) and/or a wall-clock deadline
(--minutes). Candidates already in the database are never measured again, so stopping (by
budget or Ctrl-C) and re-running continues where the last run stopped.
"""
from __future__ import annotations

import threading
import time
import traceback
from queue import Queue
from dataclasses import dataclass
from typing import Any, Callable

from harness.errors import UserError
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
               progress: SearchProgress | None = None, workers: int = 1) -> bool:
    """Measure what the budget allows; returns False if the deadline stopped it early.

    `workers` candidates are measured at once (one per board of a farm). Workers only
    measure; this thread alone adds to the database and saves it after every candidate, so
    an interrupted search loses at most the candidates in flight."""
    progress = progress or (lambda *a: None)
    queue = [(task, params) for task in tasks for params in planned(db, task, budget)]
    total, done = len(queue), 0
    results: Queue[tuple[Task, Candidate] | UserError | None] = Queue()
    pending = iter(queue)
    lock = threading.Lock()
    stopped = threading.Event()  # the deadline passed before every candidate had started

    def work() -> None:
        while True:
            with lock:
                item = next(pending, None)
                if item is not None and budget.expired():
                    stopped.set()
                    item = None
            if item is None:
                results.put(None)
                return
            progress(item[0].layer.id, done, total)
            try:
                results.put((item[0], measure_candidate(*item)))
            except UserError as exc:  # not this candidate's fault (a lost board): stop
                stopped.set()
                results.put(exc)
                return

    # daemon threads: Ctrl-C in this thread ends the search; what was saved is kept
    for _ in range(max(1, min(workers, total))):
        threading.Thread(target=work, daemon=True).start()
    finished_workers = 0
    while finished_workers < max(1, min(workers, total)):
        item = results.get()
        if item is None:
            finished_workers += 1
            continue
        if isinstance(item, UserError):
            raise item
        task, candidate = item
        db.add(task.workload, task.layer.id, len(task.space), candidate)
        db.save()
        done += 1
        progress(task.layer.id, done, total)
    progress("", done, total)
    return not stopped.is_set()


def measure_candidate(task: Task, params: dict[str, Any]) -> Candidate:
    try:
        return Candidate(params, task.measure(params))
    except UserError:
        raise  # the search cannot go on (its board is gone): not a result of this candidate
    except Exception as exc:  # noqa: BLE001 - a candidate that fails is a result: record why
        return Candidate(params, None, traceback.format_exception_only(type(exc), exc)[-1].strip()[:500])

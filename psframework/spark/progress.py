"""The driver's view of a running job's progress, through the parameter server.

Spark reports nothing of a task until it ends, but a long task (a worker training every
epoch of a fit) can add its progress into a PS table as it goes: a row per step (an
epoch), column 0 counting the tasks that reported the step, the other columns sums
(errors, examples, seconds). `TableProgress` polls that table from the driver while the
job runs and hands each row on once every task has reported it; what `on_row` makes of
a row (an epoch's entry: loss, rate, ...) is kept, in order, as `history`.

    with TableProgress(client, model, "progress", epochs, tasks, on_row=log_epoch) as p:
        df.mapInArrow(train, schema).collect()       # tasks push [1, mistakes, n, ...]
    model.history = p.history
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import numpy as np

from psframework.errors import PSError

log = logging.getLogger("psframework.spark")

__all__ = ["TableProgress"]


class TableProgress:
    """Poll `table` of `model` every `interval` seconds on a thread and call
    `on_row(index, row)` once per row from `first` on, in order, when row[0] reaches
    `tasks`, keeping what it returns (unless None) in `history`; a last poll when the
    block ends without an error. (`first` > 0: a resumed job, whose earlier rows were
    reported by the one before.)"""

    def __init__(self, client: Any, model: str, table: str, rows: int, tasks: int,
                 on_row: Callable[[int, np.ndarray], Any], interval: float = 0.5, *,
                 first: int = 0) -> None:
        self.client, self.model, self.table = client, model, table
        self.rows, self.tasks, self.on_row, self.interval = rows, tasks, on_row, interval
        self.done = first
        self.history: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"progress-{model}")

    def _poll(self) -> None:
        values = self.client.pull_rows(self.model, self.table, np.arange(self.rows))
        while self.done < self.rows and values[self.done, 0] >= self.tasks:
            entry = self.on_row(self.done, values[self.done])
            if entry is not None:
                self.history.append(entry)
            self.done += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._poll()
            except PSError as e:  # the job fails on it too, and says so: keep looking
                log.debug("progress of %s not readable now: %s", self.model, e)

    def __enter__(self) -> "TableProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self._poll()

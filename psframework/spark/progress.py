"""The driver's view of a running job's progress, through the parameter server.

Spark reports nothing of a task until it ends, but a long task (a worker training every
epoch of a fit) can add its progress into a PS table as it goes: a row per step (an
epoch), column 0 counting the tasks that reported the step, the other columns sums
(errors, examples, seconds). `TableProgress` polls that table from the driver while the
job runs and hands each row on once every task has reported it; what `on_row` makes of
a row (an epoch's entry: loss, rate, ...) is kept, in order, as `history`.

    with TableProgress(client, model, "progress", epochs, tasks, on_row=log_epoch,
                       logger=log) as p:
        df.mapInArrow(train, schema).collect()       # tasks push [1, mistakes, n, ...]
    model.history = p.history

What `on_row` logs is seen by default, as a Spark user expects a fit's progress on the
driver's console: `visible(logger)` gives the logger a handler that prints INFO lines to
stderr, but only while nobody configured logging (neither the logger nor the root has a
handler, and the logger has no level of its own); once logging is configured (e.g.
`logging.basicConfig`), that configuration decides, and the handler stays quiet.
`logging.getLogger("models.fmpair").setLevel(logging.WARNING)` silences a model's epochs.

With `report_as`, each entry's numbers are also reported to the master as that model's
training gauges (`AsyncClient.report`), for `psframework status` and the metrics endpoint.
"""

from __future__ import annotations

import logging
import math
import numbers
import sys
import threading
from typing import Any, Callable

import numpy as np

from psframework.errors import PSError

log = logging.getLogger("psframework.spark")

__all__ = ["TableProgress", "visible"]


class _UntilConfigured(logging.StreamHandler):
    """INFO lines to the current sys.stderr (looked up at each line, as logging's
    lastResort does), until the root logger gets a handler: then that configuration
    decides what is printed, and this handler prints nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ sets it
        pass

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers and super().filter(record)


def visible(logger: logging.Logger) -> logging.Logger:
    """`logger`'s INFO lines printed to stderr while logging is unconfigured (see the
    module's docstring); nothing changes if the logger or the root has a handler, or the
    logger has a level."""
    if (not logger.handlers and not logging.getLogger().handlers
            and logger.level == logging.NOTSET):
        logger.addHandler(_UntilConfigured())
        logger.setLevel(logging.INFO)
    return logger


class TableProgress:
    """Poll `table` of `model` every `interval` seconds on a thread and call
    `on_row(index, row)` once per row from `first` on, in order, when row[0] reaches
    `tasks`, keeping what it returns (unless None) in `history`; a last poll when the
    block ends without an error. (`first` > 0: a resumed job, whose earlier rows were
    reported by the one before.) `logger`: where `on_row` logs, made `visible`.
    `report_as`: the model whose training gauges the entries' numbers become."""

    def __init__(self, client: Any, model: str, table: str, rows: int, tasks: int,
                 on_row: Callable[[int, np.ndarray], Any], interval: float = 0.5, *,
                 first: int = 0, logger: logging.Logger | None = None,
                 report_as: str | None = None) -> None:
        if logger is not None:
            visible(logger)
        self.client, self.model, self.table = client, model, table
        self.rows, self.tasks, self.on_row, self.interval = rows, tasks, on_row, interval
        self.report_as = report_as
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
                self._report(entry)
            self.done += 1

    def _report(self, entry: Any) -> None:
        """An entry's finite numbers, as training gauges of `report_as`."""
        if self.report_as is None or not isinstance(entry, dict):
            return
        gauges = {k: float(v) for k, v in entry.items() if isinstance(v, numbers.Real)
                  and not isinstance(v, bool) and math.isfinite(v)}
        for step in ("epoch", "iteration"):
            if step in gauges:
                gauges[step] += 1  # epochs (iterations) done, as the local APIs report them
        try:
            self.client.report(self.report_as, **gauges)
        except PSError as e:  # gauges are for watching: a fit never fails on them
            log.debug("training gauges of %s not reported: %s", self.report_as, e)

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

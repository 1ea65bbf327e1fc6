"""Tasks of one barrier stage waiting for one another through the parameter server.

Spark's `BarrierTaskContext.barrier()` takes about a second per call, too slow for tasks
that meet several times per epoch (MF-SGD's sub-epochs, LDA's iterations). The parameter
server answers in a round trip: every task adds 1 to a counter (element 0 of a float64
vector with `add` aggregation, zero when the stage starts, used by this stage alone) on
reaching a meeting, then polls it until all tasks have arrived. The n-th meeting is over
when the counter reaches n × tasks, so nobody ever resets it.

    meeting = Meeting(client, model, "arrivals", tasks, who=f"MF-SGD task {w}")
    for step in steps:
        train(step)
        meeting.wait()          # every task has trained `step` before any goes on

The counter does not know which stage added to it: a stage Spark retries (after a failed
task) must start on a fresh model, as fit does.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["Meeting"]


class Meeting:
    """Meetings of `tasks` tasks through element 0 of `table` of `model` (a float64
    vector, aggregation add). `client`: the task's synchronous `psframework.Client`.
    `who` names the task in the TimeoutError raised when the others have not all arrived
    within `timeout` seconds. Polls every `interval` seconds at first, up to
    `max_interval` after a long wait (a short meeting costs a few round trips; a long one
    does not keep the shard busy)."""

    def __init__(self, client: Any, model: str, table: str, tasks: int, *, who: str,
                 timeout: float = 600.0, interval: float = 0.0005,
                 max_interval: float = 0.01) -> None:
        self.client, self.model, self.table, self.tasks = client, model, table, tasks
        self.who, self.timeout = who, timeout
        self.interval, self.max_interval = interval, max_interval
        self.meetings = 0  # how many this task has reached

    def wait(self) -> None:
        """Arrive at the next meeting, and return once every task has."""
        self.meetings += 1
        self.client.push_rows(self.model, self.table, [0], [1.0])
        deadline = time.monotonic() + self.timeout
        pause = self.interval
        while self.client.pull_rows(self.model, self.table, [0])[0] < self.meetings * self.tasks:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.who}: the other tasks did not reach meeting "
                                   f"{self.meetings} within {self.timeout} s")
            time.sleep(pause)
            pause = min(pause * 1.5, self.max_interval)

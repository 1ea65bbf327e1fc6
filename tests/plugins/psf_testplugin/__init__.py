"""A model plugin that exists only for the tests: it is registered through its own
entry point (see the .dist-info beside it, put on PYTHONPATH by conftest.py) and adds
server ops and an aggregator that psframework has never heard of."""

import asyncio
import threading
import time

import numba

from psframework import ConfigError, Model, TableSpec, init, udf


@numba.njit(inline="always")
def absmax(stored, pushed):
    return pushed if abs(pushed) > abs(stored) else stored


def _on_event_loop():
    """Whether an asyncio event loop is running in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Scaler(Model):
    """`weights` (rows × cols, partitioned by columns) and `peaks` (rows, kept by |max|)."""

    aggregators = {"absmax": absmax}

    def __init__(self, config):
        super().__init__(config)
        self.rows = int(self.config.get("rows", 0))
        self.cols = int(self.config.get("cols", 0))
        if self.rows < 1 or self.cols < 1:
            raise ConfigError("the scaler model needs positive config.rows and config.cols")
        self.calls = 0
        self.naps = 0

    def tables(self):
        return [
            TableSpec("weights", (self.rows, self.cols), "float64", partition_by="cols",
                      init=init.uniform(-1, 1, seed=int(self.config.get("seed", 0)))),
            TableSpec("peaks", (self.rows,), "float64", aggregate="absmax"),
        ]

    @udf
    def scale_rows(self, view, args, arrays):
        """Multiply rows by args.factor; reply with this partition's partial row sums."""
        (rows,) = arrays
        weights = view.table("weights")
        weights.data[rows] *= float(args["factor"])
        self.calls += 1
        return {"part": view.part, "calls": self.calls}, (weights.data[rows].sum(axis=1),)

    @udf(threaded=True, read=True)
    def sum_squares(self, view, args, arrays):
        """Per-row sums of squares over this partition's columns, of the rows in `arrays`
        (all rows if none). It says where it ran: the shard hands a threaded op to its
        pool only when the request's arrays are big enough, else runs it on the loop."""
        w = view.table("weights").data
        if arrays:
            w = w[arrays[0]]
        return ({"part": view.part, "thread": threading.current_thread().name,
                 "on_loop": _on_event_loop()}, ((w * w).sum(axis=1),))

    @udf(threaded=True)
    def nap(self, view, args, arrays):
        """Sleep args.seconds, then count the call: a slow op that changes state. (Send
        arrays of at least inline_below bytes so that it sleeps on the pool, not the loop.)"""
        time.sleep(float(args["seconds"]))
        self.naps += 1
        return {"naps": self.naps}

    @udf(read=True)
    def naps(self, view, args, arrays):
        """How many naps this shard has finished (a read)."""
        return {"naps": self.naps}

    @udf
    def explode(self, view, args, arrays):
        raise ValueError("this op always fails")

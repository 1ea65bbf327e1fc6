"""The Spark side of `MFSGD.fit`: what it reads by aggregations, the barrier-mode task that
trains, and the driver's view of the epochs while the job runs.

- `metadata`: μ, the id ranges, the rated items and the row counts, O(items) on the driver.
- `Train`: one task per partition of the ratings (repartitioned by user), all running at
  once (barrier mode). Each is a `Worker` for the whole fit: it owns its partition's users
  and their factors, trains item block (w + s) mod P in sub-epoch s (rotation) or its
  mini-batches (async), and meets the other tasks through the server between sub-epochs.
  After every epoch it adds (1, Σ squared train error, ratings, seconds, Σ squared
  validation error, validation ratings) to the model's `epoch_errors` row. It returns its
  users' factors.
- `EpochLog`: polls `epoch_errors` on the driver (`TableProgress`) and logs each
  finished epoch.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame, functions as F

from psframework import ConfigError
from psframework.spark import Meeting, TableProgress, arrow, executor_client
from models.mf_sgd.kernels import squared_errors
from models.mf_sgd.worker import Worker, block_edges, pull_item_side
from models.spark_estimator import id_ranges

__all__ = ["metadata", "Train", "EpochLog", "id_column", "TRAIN_SCHEMA", "USERS_SCHEMA"]

log = logging.getLogger("models.mf_sgd")

MEETING_TIMEOUT = 600.0  # seconds a task waits for the others at the end of a sub-epoch
TRAIN_SCHEMA = pa.schema([("user", pa.int64()), ("item", pa.int64()),
                          ("rating", pa.float32()), ("valid", pa.bool_())])
USERS_SCHEMA = "id long, features array<float>, bias float"


def id_column(column: str) -> Column:
    """An id column as long (StringIndexer leaves doubles)."""
    return F.col(column).cast("long")


def metadata(df: DataFrame, user: str, item: str, rating: str, valid: str | None,
             biases: bool) -> dict:
    """μ over the training rows, the id ranges, the rated items and the counts, by
    aggregations; a ConfigError for nulls, NaN ratings and ids that are not integers
    >= 0 (`models.spark_estimator.id_ranges`). Rows whose `valid` column is true are
    validation rows (none without it)."""
    id_ranges(df, {"userCol": user, "itemCol": item}, "MFSGD.fit")
    is_valid = F.col(valid) if valid else F.lit(False)
    train = F.when(~is_valid, F.lit(1))
    row = df.agg(
        F.max(user).alias("max_user"), F.max(F.when(~is_valid, F.col(item))).alias("max_item"),
        F.count(F.lit(1)).alias("rows"), F.count(train).alias("ratings"),
        F.count(rating).alias("values"), F.count(is_valid).alias("flags"),
        F.avg(F.when(~is_valid, F.col(rating))).alias("mu"),
        F.sum(F.isnan(F.col(rating).cast("double")).cast("long")).alias("nan")).first()
    assert row is not None  # an aggregation has one row
    columns = f"{rating!r}" + (f" and {valid!r}" if valid else "")
    if not row.rows == row.values == row.flags:
        raise ConfigError(f"MFSGD.fit: columns {columns} must not hold nulls")
    if row.ratings == 0:
        raise ConfigError("MFSGD.fit: the DataFrame has no ratings to train on"
                          + (f" (every row is marked by {valid!r})" if row.rows else ""))
    if row.nan:
        raise ConfigError(f"MFSGD.fit: {rating!r} holds NaN ratings")
    n_items = int(row.max_item) + 1
    rated = df.where(~is_valid).select(id_column(item).alias("i")).distinct().toArrow()
    rated_items = np.zeros(n_items, bool)
    rated_items[arrow.ids(rated.column("i"))] = True
    return {"n_users": int(row.max_user) + 1, "n_items": n_items,
            "ratings": int(row.ratings), "valid_ratings": int(row.rows - row.ratings),
            "mu": float(row.mu) if biases else 0.0, "rated_items": rated_items}


class Train:
    """The task of the barrier stage (Spark runs all of them at once or none): one worker
    for the whole fit, meeting the others through the server between sub-epochs.
    `rated_items`: a broadcast of the items rated in training (for validation), or None."""

    def __init__(self, job: dict, rated_items=None) -> None:
        self.job, self.rated_items = job, rated_items

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext
        job, w, parts = self.job, BarrierTaskContext.get().partitionId(), self.job["parts"]
        batches = [b for b in batches if b.num_rows]
        table = pa.Table.from_batches(batches) if batches else TRAIN_SCHEMA.empty_table()
        valid = table.column("valid").to_numpy(zero_copy_only=False)
        train = ~valid
        users, items = arrow.ids(table.column("user")), arrow.ids(table.column("item"))
        ratings = table.column("rating").to_numpy().astype(np.float32)
        ids = np.unique(users[train])  # the users this task trains: rows of W
        rng = np.random.default_rng([job["seed"], w])
        W = rng.normal(0, 0.1, (ids.size, job["rank"])).astype(np.float32)
        bu = np.zeros(ids.size, np.float32)
        client = executor_client(job["master"])
        edges = block_edges(job["n_items"], parts) if job["schedule"] == "rotation" else None
        worker = Worker(client.aio, job["name"], w, np.searchsorted(ids, users[train]),
                        items[train], ratings[train], W, bu, mu=job["mu"],
                        reg=job["regParam"], biases=job["biases"], seed=job["seed"],
                        edges=edges)
        scored = self._validation(ids, users[valid], items[valid], ratings[valid])
        every = np.arange(job["n_items"])
        meeting = Meeting(client, job["name"], "arrivals", parts, who=f"MF-SGD task {w}",
                          timeout=MEETING_TIMEOUT)
        for epoch in range(job["maxIter"]):
            began = time.perf_counter()
            lr = job["stepSize"] * job["decay"] ** epoch
            if edges is not None:
                for s in range(parts):
                    client.run(worker.sub_epoch(epoch, s, lr))
                    meeting.wait()  # no block is trained by two tasks at once
            else:
                client.run(worker.batches(epoch, lr, job["batchSize"],
                                          job["numConcurrentBatches"]))
                meeting.wait()
            H, bi = client.run(pull_item_side(client.aio, job["name"], every))
            sse = client.run(worker.squared_errors(H, bi))
            v_sse = squared_errors(*scored, W, bu, H, bi, job["mu"], job["biases"])
            client.push_rows(job["name"], "epoch_errors", [epoch], np.array(
                [[1, sse, worker.users.size, time.perf_counter() - began, v_sse,
                  scored[0].size]]))
            meeting.wait()  # every task scored this epoch before any trains the next
        yield pa.RecordBatch.from_arrays([pa.array(ids), arrow.rows_to_lists(W), pa.array(bu)],
                                         names=["id", "features", "bias"])

    def _validation(self, ids: np.ndarray, users: np.ndarray, items: np.ndarray,
                    ratings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The validation rows that the model can score, as `transform` with
        coldStartStrategy "drop" keeps them: user and item rated in training. Users as
        rows of this task's W."""
        if self.rated_items is None or not users.size:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        rated = self.rated_items.value
        at = np.searchsorted(ids, users)
        known = at < ids.size
        known[known] = ids[at[known]] == users[known]
        known &= items < rated.size
        known[known] = rated[items[known]]
        return at[known], items[known], ratings[known]


class EpochLog(TableProgress):
    """While fit's job runs: log each epoch of the epoch_errors table once every task
    has reported it (train RMSE, validation RMSE, updates/s); `history` after."""

    def __init__(self, client, name: str, epochs: int, parts: int, validating: bool) -> None:
        super().__init__(client, name, "epoch_errors", epochs, parts, self._epoch, logger=log,
                         report_as=name)
        self.validating = validating

    def _epoch(self, epoch: int, row: np.ndarray) -> dict:
        _, sse, n, seconds, v_sse, v_n = row
        train_rmse = float(np.sqrt(sse / n))
        valid_rmse = float(np.sqrt(v_sse / v_n)) if self.validating and v_n else None
        mean_seconds = float(seconds) / self.tasks  # the tasks' mean
        entry = {"epoch": epoch, "train_rmse": train_rmse, "valid_rmse": valid_rmse,
                 "seconds": mean_seconds, "updates": int(n)}
        valid = "" if valid_rmse is None else f", validation RMSE {valid_rmse:.4f}"
        log.info("MF-SGD epoch %d/%d: train RMSE %.4f%s, %.0f updates/s", epoch + 1,
                 self.rows, train_rmse, valid, n / max(mean_seconds, 1e-9))
        return entry

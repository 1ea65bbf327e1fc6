"""The Spark side of `FMPair.fit`: which rows are positives and what each weighs
(`positives`: ratingCol, threshold, weightCol), what it learns of them by aggregations
before training (`Metadata`), the task that trains one partition for a run of epochs
(`EpochsTask`, one task of a barrier stage) through its executor's client with the FMPair
worker loop, and the driver's view of the epochs while that job runs (`EpochLog`)."""

from __future__ import annotations

import logging
import time
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from pyspark.sql import DataFrame, functions as F

from psframework import ConfigError
from psframework.spark import TableProgress, arrow, executor_client, ml
from models.fmpair.features import FeatureSpace
from models.fmpair.sampling import NegativeSampler
from models.fmpair.worker import Trainer
from models.memory import ensure_memory, size
from models.spark_estimator import id_ranges

__all__ = ["EpochLog", "EpochsTask", "Metadata", "PROGRESS_COLUMNS", "positives",
           "positives_matrix", "users_frame"]

log = logging.getLogger("models.fmpair")


PROGRESS_COLUMNS = 5  # a progress row: tasks reported, Σ loss, pairs counted, pairs, Σ seconds
BYTES_PER_POSITIVE = 96  # a task's numpy/scipy copies of one interaction (82 measured)


def positives(df: DataFrame, params: ml.ParamValues) -> DataFrame:
    """The rows of `df` that are positives: all of them without ratingCol; with it, those
    whose rating is >= threshold, or > 0 when threshold is unset (null and NaN ratings
    never are). Every other part of fit (ids, popularity, the items left out of a user's
    recommendations, training) sees only these rows."""
    rating, threshold = params._value("ratingCol"), params._value("threshold")
    if rating is None:
        if threshold is not None:
            raise ConfigError("FMPair param threshold needs ratingCol: the column whose "
                              "values it compares")
        return df
    r = F.col(rating).cast("double")
    return df.where(r.isNotNull() & ~F.isnan(r)
                    & (r >= threshold if threshold is not None else r > 0))


def positives_matrix(users: np.ndarray, items: np.ndarray, weights: np.ndarray | None,
                     n_users: int, n_items: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """(train, first): one positive per distinct (user, item) in row-major order, as the
    users × items CSR the Trainer takes — its value is the positive's weight in the loss:
    1 without `weights`, else the sum of its rows' weights (LightFM's sample_weight,
    duplicates summed as scipy does) — and `first`, each positive's first row (for the
    context, which follows the same order)."""
    key, first = np.unique(users * n_items + items, return_index=True)
    if weights is None:
        values = np.ones(key.size, np.float32)
    else:
        values = np.zeros(key.size, np.float64)
        np.add.at(values, np.searchsorted(key, users * n_items + items), weights)
        values = values.astype(np.float32)
    train = sp.csr_matrix((values, (users[first], items[first])), shape=(n_users, n_items))
    return train, first


class EpochsTask:
    """Epochs `epochs` over one partition (a user's positives are all in one partition),
    in one task of a barrier stage, so that every partition trains at the same time:
    build the partition's share of the interactions from its Arrow batches once (the
    training items the sampler must not draw for a user are the user's rows here), then
    run the worker loop through this executor's client one epoch after another — an
    asynchronous worker of the parameter server, as the others. After each epoch it adds
    its row (1, Σ loss, pairs counted, pairs, seconds) into the progress matrix
    `job["progress"]`, which the driver's `EpochLog` reads. Yields nothing."""

    def __init__(self, job: dict, shared, epochs: range) -> None:
        self.job, self.shared, self.epochs = job, shared, epochs

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext
        index = BarrierTaskContext.get().partitionId()
        batches = [b for b in batches if b.num_rows]
        client = executor_client(self.job["master"])
        trainer = self._trainer(index, batches, client) if batches else None
        for epoch in self.epochs:
            started = time.perf_counter()
            totals = [0.0, 0]

            def on_batch(_size: int, total: float, counted: int) -> None:
                totals[0] += total
                totals[1] += counted
            pairs = client.run(trainer.epoch(epoch, on_batch)).pairs if trainer else 0
            client.push_rows(self.job["progress"], "values", [epoch], np.array(
                [[1, totals[0], totals[1], pairs, time.perf_counter() - started]]))
        yield from ()  # mapInArrow takes a generator; what a task reports is its progress

    def _trainer(self, index: int, batches: list[pa.RecordBatch], client) -> Trainer:
        table = pa.Table.from_batches(batches)
        job, meta = self.job, self.shared.value
        ensure_memory(table.num_rows * BYTES_PER_POSITIVE + meta["n_users"] * 24,
                      f"FMPair.fit, Spark partition {index} ({table.num_rows:,} interactions)",
                      "repartition the interactions into more partitions "
                      "(spark.default.parallelism) or give executors more memory")
        users, items = arrow.ids(table.column("user")), arrow.ids(table.column("item"))
        weights = (table.column("weight").to_numpy().astype(np.float64)
                   if "weight" in table.column_names else None)
        train, first = positives_matrix(users, items, weights, meta["n_users"],
                                        meta["n_items"])
        if meta["context_width"]:
            context = arrow.vectors_to_csr(table.column("context").take(pa.array(first)),
                                           meta["context_width"],
                                           what="a vector of userctxfeaturesCol")
            space = FeatureSpace(sp.csr_matrix((meta["n_users"], 0), dtype=np.float32),
                                 meta["item"], context)
        else:
            space = FeatureSpace(sp.identity(meta["n_users"], np.float32, format="csr"),
                                 meta["item"])
        sampler = NegativeSampler(train, job["sampler"], job["rho"], True, meta["attribute"],
                                  popularity=meta["popularity"])
        seed = int(np.random.SeedSequence([job["seed"], index, self.epochs.start])
                   .generate_state(1)[0])
        return Trainer(client.aio, job["name"], space, train, sampler, loss=job["loss"],
                       batch_size=job["batchSize"], num_negatives=job["numNegatives"],
                       concurrent_batches=job["numConcurrentBatches"], seed=seed)


class EpochLog(TableProgress):
    """While fit's job runs: log each epoch of the progress matrix once every task has
    reported it (loss, pairs/s over the tasks' mean seconds); `history` after."""

    def __init__(self, client, name: str, progress: str, epochs: int, tasks: int,
                 first: int) -> None:
        # a resumed fit starts at `first`: the epochs before were logged by the first fit
        super().__init__(client, progress, "values", epochs, tasks, self._epoch, first=first,
                         logger=log, report_as=name)

    def _epoch(self, epoch: int, row: np.ndarray) -> dict:
        _, loss, counted, pairs, seconds = row
        entry = {"epoch": epoch, "loss": float(loss / max(counted, 1)), "pairs": int(pairs),
                 "seconds": float(seconds) / self.tasks}
        entry["pairs_per_s"] = entry["pairs"] / max(entry["seconds"], 1e-9)
        log.info("FMPair epoch %d/%d: loss %.4f, %d pairs, %.0f pairs/s", epoch + 1,
                 self.rows, entry["loss"], entry["pairs"], entry["pairs_per_s"])
        return entry


class Metadata:
    """What fit learns about the data before training, by aggregations on Spark: the id
    ranges, and per item its popularity, features and sampling attribute (O(items), on
    the driver and broadcast to the tasks). Nothing per interaction reaches the driver:
    per user, the items to leave out of recommendations and the context fit saw stay in
    Spark as `users` (id, exclude[, context]), a DataFrame the model keeps."""

    n_users: int
    n_items: int
    rows: int  # positives
    popularity: np.ndarray  # users per item
    attribute: np.ndarray | None  # per item, with samplingCol
    context_width: int
    space: FeatureSpace
    users: DataFrame  # id, exclude[, context]

    @classmethod
    def compute(cls, params: ml.ParamValues, df: DataFrame) -> "Metadata":
        """From `df`'s positives (`positives`); ids checked by `id_ranges`, weights here."""
        m = cls()
        u, i = params._value("userCol"), params._value("itemCol")
        ids = {"userCol": u, "itemCol": i}
        if params._value("samplingCol"):
            ids["samplingCol"] = params._value("samplingCol")
        rows, ranges = id_ranges(df, ids, "FMPair.fit", nullable=("samplingCol",))
        if rows == 0:
            raise ConfigError("FMPair.fit: the DataFrame has no rows to train on"
                              + (" (no row is a positive: see ratingCol and threshold)"
                                 if params._value("ratingCol") else ""))
        weight = params._value("weightCol")
        if weight:
            w = F.col(weight).cast("double")
            bad = df.where(w.isNull() | F.isnan(w) | (w <= 0)).select(weight).first()
            if bad is not None:
                raise ConfigError(f"FMPair param weightCol: column {weight!r} must hold a "
                                  f"number > 0 for every positive, found {bad[0]!r}")
        user_ids, item_ids = ranges["userCol"], ranges["itemCol"]
        assert user_ids is not None and item_ids is not None  # not nullable, and rows > 0
        m.n_users, m.n_items, m.rows = user_ids[1] + 1, item_ids[1] + 1, rows
        ensure_memory((m.n_users + m.n_items) * 16 * 2,
                      f"FMPair.fit's feature space for ids up to {m.n_users - 1:,} (users) and "
                      f"{m.n_items - 1:,} (items)", "ids must be indices 0..n-1 with no big "
                      "gaps: index them first, e.g. with StringIndexer")
        user, item = F.col(u).cast("long"), F.col(i).cast("long")
        counts = (df.select(user.alias("u"), item.alias("i")).distinct().groupBy("i").count()
                  .toArrow())
        m.popularity = np.zeros(m.n_items, np.int64)  # users per item
        m.popularity[arrow.ids(counts.column("i"))] = arrow.ids(counts.column("count"))
        item_features = sp.identity(m.n_items, np.float32, format="csr")
        if params._value("itemfeaturesCol"):
            vectors = params._value("itemfeaturesCol")
            first = df.groupBy(item).agg(F.first(vectors, ignorenulls=True))
            parts = first.mapInArrow(arrow.sparse_parts, arrow.SPARSE_PARTS).toArrow()
            item_features = arrow.per_id_csr(parts, m.n_items, repr(vectors))
        m.attribute = None
        if params._value("samplingCol"):
            got = (df.groupBy(item.alias("i"))
                   .agg(F.first(F.col(params._value("samplingCol")).cast("long"),
                                ignorenulls=True).alias("a"))
                   .where("a IS NOT NULL").toArrow())
            m.attribute = np.arange(m.n_items, dtype=np.int64) + 2**40  # unshared by default
            m.attribute[arrow.ids(got.column("i"))] = arrow.ids(got.column("a"))
        m.context_width = 0
        ctx = params._value("userctxfeaturesCol")
        if ctx:
            row = df.where(F.col(ctx).isNotNull()).select(ctx).first()
            m.context_width = row[0].size if row is not None else 0
            m.space = FeatureSpace(sp.csr_matrix((m.n_users, 0), dtype=np.float32),
                                   item_features,
                                   sp.csr_matrix((0, m.context_width), dtype=np.float32))
        else:
            m.space = FeatureSpace(sp.identity(m.n_users, np.float32, format="csr"),
                                   item_features)
        m.users = users_frame(df, params, m.n_items)
        held = (m.popularity.nbytes + (0 if m.attribute is None else m.attribute.nbytes)
                + item_features.data.nbytes + item_features.indices.nbytes
                + item_features.indptr.nbytes)
        log.info("FMPair.fit: %d users, %d items, %d interactions; %s of item data "
                 "(popularity, features, sampling attribute) on the driver and broadcast",
                 m.n_users, m.n_items, m.rows, size(held))
        return m


def users_frame(df: DataFrame, params: ml.ParamValues, n_items: int) -> DataFrame:
    """Per training user: the items never to recommend (its training items and those of
    filterItemsCol) and the first userctxfeaturesCol vector of its rows."""
    u, i = params._value("userCol"), params._value("itemCol")
    exclude = F.collect_set(F.col(i).cast("long"))
    if params._value("filterItemsCol"):
        blocked = F.flatten(F.collect_list(F.col(params._value("filterItemsCol"))
                                           .cast("array<long>")))
        exclude = F.array_union(exclude, F.filter(
            blocked, lambda x: x.isNotNull() & (x >= 0) & (x < n_items)))
    aggs = [exclude.alias("exclude")]
    if params._value("userctxfeaturesCol"):
        aggs.append(F.first(params._value("userctxfeaturesCol"), ignorenulls=True)
                    .alias("context"))
    return df.groupBy(F.col(u).cast("long").alias("id")).agg(*aggs)

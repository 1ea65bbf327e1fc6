"""The Spark side of the randomized SVD: the matrix in row blocks where Spark holds it,
the passes over it as Spark jobs, and the singular vectors as DataFrames.

- `read_entries`: the input (entries, or a vector per row) as (row, col, value) entries
  and the matrix's shape, checked on the driver (ids as `models.spark_estimator` checks
  them, values, the vectors' sizes: ConfigErrors naming the column);
- `row_blocks`: the entries repartitioned once into numBlocks blocks of consecutive rows
  and materialized where they land (localCheckpoint), so every pass reads each block
  from the executor that holds it; nothing is shuffled afterwards;
- `SparkPasses` (`models.rsvd.halko.Passes`): a pass is one Spark job whose task per
  block builds its `RowBlock` and multiplies it against the parameter server's tables,
  returning the bytes it moved. A forward pass writes (a retried task writes the same);
  a backward pass adds, so its tasks refuse to run as a retry: the run fails instead
  of adding a block's product twice;
- `vectors_frame`: the first k columns of a table as a DataFrame of (id, vector),
  written by executors that pull their range of rows (no collect), and materialized
  before the parameter server goes away.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
from pyspark import TaskContext
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame, functions as F

from psframework import ConfigError, PSError
from psframework.spark import arrow, executor_client
from models.rsvd.blocks import RowBlock
from models.spark_estimator import id_ranges, spark_jobs

__all__ = ["read_entries", "row_blocks", "SparkPasses", "vectors_frame"]

log = logging.getLogger("models.rsvd")

STATS_SCHEMA = "bytes_pulled long, bytes_pushed long"
ENTRIES_SCHEMA = "row long, col long, value double"


def read_entries(df: DataFrame, row: str, col: str | None, value: str | None,
                 features: str | None, shape: tuple[int | None, int | None], who: str
                 ) -> tuple[DataFrame, int, int]:
    """(entries (row long, col long, value double, zeros left out), m, n) of `df`:
    entries in columns row/col/value, or, with `features`, a Vector per row (its index in
    `row`). The shape is `shape` where given, else 1 + the largest index (the vectors'
    size for n). Ids as `id_ranges` checks them, values that are null, NaN or infinite,
    vectors of several sizes and indices beyond the shape are ConfigErrors naming the
    column."""
    if features is not None:
        _, ranges = id_ranges(df, {"rowCol": row}, who)
        n = vector_size(df, features, shape[1], who)
        entries = df.select(F.col(row).cast("long").alias("row"),
                            F.col(features).alias("vector")).mapInArrow(
            VectorEntries(n, who, features), ENTRIES_SCHEMA)
        ranges["colCol"] = (0, n - 1)
    else:
        assert col is not None and value is not None  # entries: the spec's defaults
        _, ranges = id_ranges(df, {"rowCol": row, "colCol": col}, who)
        entries = df.select(F.col(row).cast("long").alias("row"),
                            F.col(col).cast("long").alias("col"),
                            F.col(value).cast("double").alias("value"))
        v = F.col("value")
        bad = entries.where(v.isNull() | F.isnan(v) | (F.abs(v) == float("inf"))).first()
        if bad is not None:
            raise ConfigError(f"{who}: column {value!r} holds a null, NaN or infinite value "
                              f"(at row {bad['row']}); drop or replace those entries")
    said = {"rowCol": row, "colCol": col or features}
    found = []
    for name, given in (("rowCol", shape[0]), ("colCol", shape[1])):
        high = ranges.get(name)
        needed = 0 if high is None else high[1] + 1
        if given is not None and needed > given:
            raise ConfigError(f"{who}: column {said[name]!r} holds index {needed - 1}, beyond "
                              f"the {given} {'rows' if name == 'rowCol' else 'columns'} set; "
                              "unset numRows/numCols or set them larger")
        found.append(given or needed)
    if not all(found):
        raise ConfigError(f"{who}: the matrix has no entries")
    return entries.where(F.col("value") != 0), found[0], found[1]


def vector_size(df: DataFrame, column: str, given: int | None, who: str) -> int:
    """The one size of the Vectors in `column` (one pass, a row per partition back); a
    ConfigError for nulls, NaN or infinite values, several sizes, or a size other than
    `given`."""
    found = df.select(column).mapInArrow(vector_survey, VECTOR_SURVEY).collect()
    nulls, bad = sum(r["nulls"] for r in found), sum(r["nonfinite"] for r in found)
    sizes = {s for r in found if r["vectors"] for s in (r["min_size"], r["max_size"])}
    where = f"{who}: column {column!r}"
    if nulls or bad:
        raise ConfigError(f"{where} holds {nulls} null vector(s) and {bad} NaN or infinite "
                          "value(s); drop or replace them")
    if not sizes:
        raise ConfigError(f"{where} holds no vectors")
    if len(sizes) > 1 or (given is not None and sizes != {given}):
        raise ConfigError(f"{where} holds vectors of sizes {sorted(sizes)}"
                          + (f", not the {given} columns set (numCols)" if given else "")
                          + "; every row needs one size")
    return sizes.pop()


VECTOR_SURVEY = "vectors long, nulls long, nonfinite long, min_size long, max_size long"


def vector_survey(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow over one column of Vectors: one row of VECTOR_SURVEY per partition."""
    vectors = nulls = bad = 0
    low, high = np.iinfo(np.int64).max, -1
    for batch in batches:
        present, sizes, flat = arrow.vector_parts(batch.column(0))
        sizes = sizes[present]
        vectors, nulls = vectors + sizes.size, nulls + int((~present).sum())
        bad += int((~np.isfinite(flat)).sum())
        if sizes.size:
            low, high = min(low, int(sizes.min())), max(high, int(sizes.max()))
    yield pa.RecordBatch.from_pydict({"vectors": [vectors], "nulls": [nulls],
                                      "nonfinite": [bad], "min_size": [low],
                                      "max_size": [high]})


class VectorEntries:
    """mapInArrow: (row, vector) rows to (row, col, value) entries of their nonzeros."""

    def __init__(self, width: int, who: str, column: str) -> None:
        self.width, self.who, self.column = width, who, column

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            csr = arrow.vectors_to_csr(batch.column(1), self.width, dtype=np.float64,
                                       what=f"{self.who}: a vector of column {self.column!r}")
            rows = arrow.ids(batch.column(0))
            yield pa.RecordBatch.from_arrays(
                [pa.array(np.repeat(rows, np.diff(csr.indptr))),
                 pa.array(csr.indices.astype(np.int64)), pa.array(csr.data)],
                names=["row", "col", "value"])


def row_blocks(entries: DataFrame, count: int) -> DataFrame:
    """`entries` in `count` blocks of consecutive rows, a block per partition, with
    about equal numbers of entries (Spark's range partitioning of the rows, by a sample
    of the entries: a block's work is its entries), materialized where they land."""
    return entries.repartitionByRange(count, "row").localCheckpoint()


class Pass:
    """mapInArrow task of one pass: this partition's entries as a `RowBlock`, multiplied
    `direction` ("forward" or "backward") against model `name`; yields one STATS_SCHEMA
    row: the bytes it moved."""

    def __init__(self, master: str, name: str, direction: str) -> None:
        self.master, self.name, self.direction = master, name, direction

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        context = TaskContext.get()
        if self.direction == "backward" and context is not None and context.attemptNumber():
            raise PSError("a retried Aᵀ·Q task (or a speculative copy) would add its block's "
                          "product into the sum a second time; the decomposition stops rather "
                          "than answer wrongly: run it again (and keep spark.speculation off)")
        batches = [b for b in batches if b.num_rows]
        if not batches:
            return
        table = pa.Table.from_batches(batches)
        block = RowBlock.from_entries(*(table.column(c).to_numpy() for c in
                                        ("row", "col", "value")))
        client = executor_client(self.master)
        client.run(getattr(block, self.direction)(client.aio, self.name))
        yield pa.RecordBatch.from_pydict({"bytes_pulled": [block.pulled],
                                          "bytes_pushed": [block.pushed]})


class SparkPasses:
    """`halko.Passes` over the row blocks of a Spark DataFrame (`row_blocks`): each pass
    one Spark job, one task per block. `moved`: the bytes pulled and pushed so far."""

    def __init__(self, blocks: DataFrame, master: str, name: str, who: str) -> None:
        self.blocks, self.master, self.name, self.who = blocks, master, name, who
        self.pulled = self.pushed = 0

    def _run(self, direction: str) -> None:
        sc = self.blocks.sparkSession.sparkContext
        step = f"{self.who}: a {direction} pass over the matrix"
        sc.setJobDescription(step)
        try:
            with spark_jobs(sc, step):
                stats = self.blocks.mapInArrow(Pass(self.master, self.name, direction),
                                               STATS_SCHEMA).collect()
        finally:
            sc.setJobDescription(None)  # type: ignore[arg-type]  # None clears it
        self.pulled += sum(r["bytes_pulled"] for r in stats)
        self.pushed += sum(r["bytes_pushed"] for r in stats)

    async def forward(self) -> None:
        await asyncio.to_thread(self._run, "forward")

    async def backward(self) -> None:
        await asyncio.to_thread(self._run, "backward")

    @property
    def moved(self) -> tuple[int, int]:
        return self.pulled, self.pushed


class PullRows:
    """mapInArrow over (id) ranges: each id's row of `table`, its first k columns."""

    def __init__(self, master: str, name: str, table: str, k: int) -> None:
        self.master, self.name, self.table, self.k = master, name, table, k

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        client = executor_client(self.master)
        for batch in batches:
            ids = arrow.ids(batch.column(0))
            if not ids.size:
                continue
            rows = client.pull_rows(self.name, self.table, ids)[:, :self.k]
            yield pa.RecordBatch.from_arrays(
                [pa.array(ids), arrow.rows_to_lists(rows, np.float64)], names=["id", "vector"])


def vectors_frame(spark, master: str, name: str, table: str, count: int, k: int,
                  parts: int) -> DataFrame:
    """Rows 0..count-1 of `table` (first k columns) as a materialized DataFrame of (id
    long, vector), pulled by `parts` tasks."""
    pulled = spark.range(count, numPartitions=max(1, min(parts, count))).mapInArrow(
        PullRows(master, name, table, k), "id long, vector array<double>")
    return pulled.select("id", array_to_vector(F.col("vector")).alias("vector")).localCheckpoint()

"""`RandomizedSVD`: Criteo's Spark-RSVD on the parameter server — the truncated SVD of a
sparse matrix held by Spark in row blocks, with the tall-and-skinny matrices on the PS.

    from models.rsvd import RandomizedSVD
    svd = RandomizedSVD(k=50, powerIter=2).run(entries)     # (row, col, value) rows
    svd.s                                                   # numpy, descending
    svd.U.show(); svd.V.show()                              # DataFrames of (id, vector)

Why a `run` and not a pyspark.ml Estimator: a truncated SVD is one decomposition of one
matrix, not a stage that fits on one DataFrame and transforms others (MLlib's
`RowMatrix.computeSVD` and Spark-RSVD's `RSVD.run` are functions for the same reason);
its params are still pyspark.ml Params (Spark-RSVD's `RSVDConfig`, camelCased:
`explainParams()`). The pipeline stage built on it is `PureSVD`.

What `run` does (`SparkDecomposition`, which `PureSVD.fit` uses too): the entries go once
into numBlocks blocks of consecutive rows, materialized where they land; a parameter server is
started on the executors (or the one at parameterServerHost is used); the driver runs
`models.rsvd.halko.decompose`, each pass over A a Spark job whose tasks pull the rows of
the tall-and-skinny matrix their block touches and write or add their products, nothing
shuffled or collected; U and V are written into DataFrames by executors pulling their
rows, then the model is destroyed. The driver logs every pass (seconds, bytes moved)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import numpy as np
from pyspark.sql import DataFrame

from psframework.spark import ml, pin_local_interpreter, visible
from models.rsvd.halko import decompose, forward, measured, passes
from models.rsvd.local import width
from models.rsvd.plugin import LEFT, RIGHT
from models.rsvd.spark_job import SparkPasses, read_entries, row_blocks, vectors_frame
from models.rsvd.spec import SPEC
from models.spark_estimator import check_columns, spark_jobs, start_parameter_server, training

__all__ = ["RandomizedSVD", "SingularValueDecomposition", "SparkDecomposition"]

log = logging.getLogger("models.rsvd")


@dataclass
class SingularValueDecomposition:
    """A ≈ U · diag(s) · Vᵀ (MLlib's SingularValueDecomposition, with DataFrames): s the
    k singular values, descending; U (m rows) and V (n rows) DataFrames of (id long,
    vector), or None when not computed. history: per pass over A, its seconds and the
    bytes its tasks pulled and pushed."""

    U: DataFrame | None
    s: np.ndarray
    V: DataFrame | None
    history: list[dict] = field(default_factory=list)


class SparkDecomposition:
    """One decomposition of the row blocks `blocks` (m × n) on a parameter server, for
    the life of a `with`: `decompose()` the singular values, then read U and V from the
    server (`frame`, `pull`) or make one more pass (`forward`: `left` = A · `right`),
    before the server goes away. `params`: the caller's Params (the parameter server's
    and the algorithm's: oversample, powerIter, seed)."""

    def __init__(self, params: ml.ParamValues, blocks: DataFrame, parts: int, m: int, n: int,
                 k: int, who: str) -> None:
        self.params, self.blocks, self.parts, self.m, self.n, self.k = (
            params, blocks, parts, m, n, k)
        self.who = who
        self.power_iter = params._value("powerIter")
        self.width = width(k, params._value("oversample"), (m, n),
                           "rank" if params.hasParam("rank") else "k")
        self.history: list[dict] = []

    def __enter__(self) -> "SparkDecomposition":
        with contextlib.ExitStack() as stack:  # a failure on the way in undoes the rest
            ps = stack.enter_context(start_parameter_server(self.params,
                                                            self.blocks.sparkSession))
            self.client, self.master = ps.client(), ps.master
            config = {"rows": self.m, "cols": self.n, "width": self.width,
                      "seed": self.params._value("seed")}
            self.name = stack.enter_context(
                training(self.params, ps, "rsvd", config, self.who)).name
            self.over = SparkPasses(self.blocks, self.master, self.name, self.who)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, kind, error, tb) -> None:
        if error is None:
            self.client.destroy(self.name)  # what is kept was read: nothing stays
        self._stack.__exit__(kind, error, tb)

    def decompose(self) -> np.ndarray:
        """The k singular values; U in `left`'s and V in `right`'s first k columns."""
        total = passes(self.power_iter)
        visible(log)

        def on_pass(entry: dict) -> None:
            self.history.append(entry)
            log.info("%s: pass %d/%d (%s) in %.1f s, %.1f MB pulled, %.1f MB pushed",
                     self.who, len(self.history), total, entry["pass"], entry["seconds"],
                     entry["bytes_pulled"] / 1e6, entry["bytes_pushed"] / 1e6)

        return self.client.run(decompose(self.client.aio, self.name, self.over, self.k,
                                         self.power_iter, on_pass=on_pass))

    def forward(self) -> None:
        """`left` = A · `right`: one more pass, kept in `history` as "A·V"."""
        self.history.append(self.client.run(measured(
            "A·V", self.over, forward(self.client.aio, self.name, self.over))))

    def frame(self, table: str) -> DataFrame:
        """`table`'s first k columns as a DataFrame of (id, vector), written by executors."""
        count = self.m if table == LEFT else self.n
        with spark_jobs(self.blocks.sparkSession.sparkContext, f"{self.who} writing {table}"):
            return vectors_frame(self.blocks.sparkSession, self.master, self.name, table,
                                 count, self.k, self.parts)

    def pull(self, table: str) -> np.ndarray:
        """`table`'s first k columns, on the driver."""
        count = self.m if table == LEFT else self.n
        return self.client.pull_rows(self.name, table, np.arange(count))[:, :self.k].copy()


class RandomizedSVD(ml.ParamValues):
    """The truncated SVD of a sparse matrix by Halko et al.'s randomized algorithm on the
    parameter server (docs/rsvd.md). Params: see `explainParams()`."""

    def run(self, dataset: DataFrame) -> SingularValueDecomposition:
        """Decompose the matrix of `dataset`: (row, col, value) entries (rowCol, colCol,
        valueCol; entries at one position add up), or a Vector per row (featuresCol,
        with its row index in rowCol)."""
        self._check_spec()
        who = "RandomizedSVD"
        features = self._value("featuresCol")
        check_columns(self, dataset.schema, {"rowCol": "id", "featuresCol": "vector"} if features
                      else {"rowCol": "id", "colCol": "id", "valueCol": "number"}, who)
        sc = dataset.sparkSession.sparkContext
        pin_local_interpreter(sc)
        count = self._value("numBlocks") or max(sc.defaultParallelism, 1)
        with spark_jobs(sc, f"{who} reading its matrix"):
            entries, m, n = read_entries(
                dataset, self._value("rowCol"), self._value("colCol"), self._value("valueCol"),
                features, (self._value("numRows"), self._value("numCols")), who)
            blocks = row_blocks(entries, count)
        left = self._value("computeLeftSingularVectors")
        right = self._value("computeRightSingularVectors")
        with SparkDecomposition(self, blocks, count, m, n, self._value("k"), who) as run:
            s = run.decompose()
            U = run.frame(LEFT) if left else None
            V = run.frame(RIGHT) if right else None
        blocks.unpersist()
        return SingularValueDecomposition(U, s, V, run.history)


ml.declare(RandomizedSVD, SPEC)
ml.keyword_init(RandomizedSVD)

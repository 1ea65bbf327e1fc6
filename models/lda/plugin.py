"""The `lda` model on the parameter server: the word-topic counts of a topic model.

Tables (every count added, never replaced, so any number of workers push deltas at once):
- `word_topic`: vocabulary × k, int32, rows dealt cyclically over the shards (a Zipf
  vocabulary's frequent words have the low ids: cycling spreads them), n_wk;
- `topic_totals`: k, int64, n_k = Σ_w n_wk;
- with `iterations` (the Spark estimator's), `progress` (iterations × 5, float64): the
  tasks' sums of (1, tokens, documents' log-likelihood, Σ log p(w | d), seconds) for each
  iteration, which the driver reads while training runs; `arrivals` (1, float64): how
  many times tasks reached a meeting, so that they can wait for one another between
  iterations; and `log_likelihood` (iterations × 2, float64): (1, the collapsed
  log-likelihood) once the iteration's is known.

Server ops: `sparse_rows` (the nonzero counts of some rows, as CSR: a frequent word's row
has up to k nonzeros, a rare one's a handful, so a block's pull costs what its words hold,
not words × k) and `word_log_likelihood` (this partition's Σ log Γ(n_wk + β) - log Γ(β),
the word part of the collapsed log-likelihood, without moving the counts)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from psframework import ConfigError, Model, ShapeError, TableSpec, udf
from models.lda import counts

__all__ = ["LDAPlugin", "WORD_TOPIC", "TOPIC_TOTALS", "PROGRESS", "ARRIVALS", "LIKELIHOOD",
           "PROGRESS_COLUMNS"]

WORD_TOPIC, TOPIC_TOTALS, PROGRESS, ARRIVALS, LIKELIHOOD = (
    "word_topic", "topic_totals", "progress", "arrivals", "log_likelihood")
PROGRESS_COLUMNS = ("tasks", "tokens", "doc_loglik", "token_loglik", "seconds")


class LDAPlugin(Model):
    """config: vocabulary (V >= 1), k (topics, >= 1), beta (> 0); optional iterations
    (>= 1: adds the `progress` table)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        for key, optional in (("vocabulary", False), ("k", False), ("iterations", True)):
            value = self.config.get(key)
            if optional and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"lda config {key} must be a positive integer, got {value!r}")
        beta = self.config.get("beta")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise ConfigError(f"lda config beta must be a number > 0, got {beta!r}")

    def tables(self) -> list[TableSpec]:
        V, K = self.config["vocabulary"], self.config["k"]
        tables = [TableSpec(WORD_TOPIC, (V, K), "int32", partitioner="cyclic", aggregate="add"),
                  TableSpec(TOPIC_TOTALS, (K,), "int64", aggregate="add")]
        if self.config.get("iterations"):
            tables.extend([TableSpec(PROGRESS, (self.config["iterations"],
                                                len(PROGRESS_COLUMNS)), "float64"),
                           TableSpec(ARRIVALS, (1,), "float64"),
                           TableSpec(LIKELIHOOD, (self.config["iterations"], 2), "float64")])
        return tables

    def on_partition(self, view) -> None:
        data = view.table(WORD_TOPIC).data
        counts.sparse_rows(data, np.zeros(0, np.int64))
        counts.word_log_likelihood(data[:0], 1.0)

    @udf(threaded=True, read=True)
    def sparse_rows(self, view, args, arrays):
        """The nonzero counts of local rows arrays[0] (int64) of this partition's
        word_topic: (indptr, topics int32, counts int32), CSR."""
        if len(arrays) != 1 or arrays[0].ndim != 1 or arrays[0].dtype.kind not in "iu":
            raise ShapeError("sparse_rows takes one array: the partition's local row indices")
        data = view.table(WORD_TOPIC).data
        rows = arrays[0].astype(np.int64, copy=False)
        if rows.size and (rows.min() < 0 or rows.max() >= data.shape[0]):
            raise ShapeError(f"sparse_rows: rows must be in [0, {data.shape[0]}) on this "
                             "partition")
        return {}, counts.sparse_rows(data, rows)

    @udf(threaded=True, read=True)
    def word_log_likelihood(self, view, args, arrays):
        """{"value": Σ over this partition's counts of log Γ(n + β) - log Γ(β)}."""
        return {"value": float(counts.word_log_likelihood(view.table(WORD_TOPIC).data,
                                                           float(self.config["beta"])))}

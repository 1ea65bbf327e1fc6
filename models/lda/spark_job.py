"""The Spark side of `LDA.fit`: what it reads of the documents first, the barrier-mode task
that samples, and the driver's view of the iterations while the job runs.

- `survey`: one pass over the count vectors (a row per partition back to the driver):
  their size (the vocabulary), documents and tokens, and a ConfigError naming the column
  and CountVectorizer for nulls, vectors of several sizes, or values that are not counts.
- `Train`: one task per partition of the documents, all running at once (barrier mode).
  Each is a `models.lda.worker.Worker` for the whole fit: Worker `index` p for partition
  p, seeded by the `seed` param, so that one partition samples exactly as
  `LocalLDA(num_workers=1)` does on the same documents. Its documents and their topics
  never leave it. Per iteration every task sweeps its tokens, adds (1, tokens,
  documents' log-likelihood, Σ log p(w | d), seconds) to the model's `progress` row and
  meets the others (`psframework.spark.Meeting` on the `arrivals` table); then task 0,
  the counts being consistent, computes the collapsed log-likelihood
  (`worker.log_likelihood`) and writes (1, it) into row `iteration` of the model's
  `log_likelihood` table, and all meet again before the next sweep.
- `IterationLog`: polls that table on the driver (`TableProgress`) and logs each
  iteration once its log-likelihood is in, with the tasks' sums of its `progress` row.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from pyspark.sql import DataFrame

from psframework import ConfigError
from psframework.spark import Meeting, TableProgress, arrow, executor_client
from models.lda.corpus import tokens
from models.lda.plugin import ARRIVALS, LIKELIHOOD, PROGRESS
from models.lda.worker import Worker, log_likelihood

__all__ = ["Survey", "survey", "read_counts", "Train", "IterationLog", "TRAIN_SCHEMA"]

log = logging.getLogger("models.lda")

MEETING_TIMEOUT = 3600.0  # seconds a task waits for the others to finish an iteration
TRAIN_SCHEMA = "part int, documents long, tokens long"
SURVEY_SCHEMA = ("rows long, nulls long, tokens double, min_size int, max_size int, "
                 "bad long, example double")
class Survey:
    """mapInArrow over (features): one SURVEY_SCHEMA row per partition (an empty one
    too): rows, null vectors, tokens, the smallest and largest vector size, and how many
    stored values are not counts (NaN, negative, fractions) with one of them."""

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = nulls = bad = 0
        total = 0.0
        low, high, example = np.iinfo(np.int32).max, -1, math.nan
        for batch in batches:
            if not batch.num_rows:
                continue
            present, sizes, values = arrow.vector_parts(batch.column(0))
            rows += batch.num_rows
            nulls += int((~present).sum())
            if present.any():
                low = min(low, int(sizes[present].min()))
                high = max(high, int(sizes[present].max()))
            wrong = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
            if wrong.any():
                bad += int(wrong.sum())
                example = float(values[wrong][0]) if math.isnan(example) else example
            total += float(values[~wrong].sum())
        yield pa.RecordBatch.from_pylist(
            [{"rows": rows, "nulls": nulls, "tokens": total, "min_size": low, "max_size": high,
              "bad": bad, "example": example}],
            schema=pa.schema([("rows", pa.int64()), ("nulls", pa.int64()),
                              ("tokens", pa.float64()), ("min_size", pa.int32()),
                              ("max_size", pa.int32()), ("bad", pa.int64()),
                              ("example", pa.float64())]))


@dataclass(frozen=True)
class Documents:
    """What `survey` found: vocabulary (the vectors' size), documents, tokens, and the
    partitions the documents are in."""
    vocabulary: int
    documents: int
    tokens: int
    partitions: int


def survey(data: DataFrame, column: str, who: str = "LDA.fit") -> Documents:
    """The count vectors of `data` (its one column: `column` of the user's DataFrame),
    checked as LDA reads them; a ConfigError naming `column` and the fix otherwise."""
    parts = data.mapInArrow(Survey(), SURVEY_SCHEMA).toArrow().to_pylist()
    rows = sum(p["rows"] for p in parts)
    where = f"{who}: featuresCol {column!r}"
    fix = ("the word counts of each document, as CountVectorizer makes them from "
           "Tokenizer's words")
    if not rows:
        raise ConfigError(f"{where}: the DataFrame has no documents")
    nulls = sum(p["nulls"] for p in parts)
    if nulls:
        raise ConfigError(f"{where} must not hold nulls ({nulls} of {rows} rows do); every "
                          f"document needs a vector: {fix}")
    bad = sum(p["bad"] for p in parts)
    if bad:
        example = next(p["example"] for p in parts if p["bad"])
        raise ConfigError(f"{where} must hold word counts (integers >= 0), found {bad} other "
                          f"value(s), e.g. {example!r}: pass {fix}, not weights such as "
                          "tf-idf (IDF's output)")
    sizes = {p["min_size"] for p in parts if p["max_size"] >= 0} | {
        p["max_size"] for p in parts if p["max_size"] >= 0}
    if len(sizes) != 1:
        raise ConfigError(f"{where}: every vector must have the vocabulary's size, found "
                          f"sizes {sorted(sizes)[:2]} ({fix}: one CountVectorizerModel "
                          "for all documents)")
    (vocabulary,) = sizes
    total = sum(p["tokens"] for p in parts)
    if vocabulary < 1 or total == 0:
        raise ConfigError(f"{where}: the documents hold no tokens (every count is 0); "
                          f"pass {fix}")
    return Documents(int(vocabulary), int(rows), int(round(total)), len(parts))


def read_counts(batches: Iterable[pa.RecordBatch], vocabulary: int,
                column: int | str = 0, nulls: str = "error") -> sp.csr_matrix:
    """The count vectors of `batches` (their `column`) as one CSR, documents in order; a
    null vector is an error (nulls="error") or an empty document (nulls="empty")."""
    blocks = [arrow.vectors_to_csr(b.column(column), vocabulary, nulls=nulls,
                                   what="a document's count vector")
              for b in batches if b.num_rows]
    if not blocks:
        return sp.csr_matrix((0, vocabulary), dtype=np.float32)
    return sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]


class Train:
    """The task of the barrier stage (Spark runs all of them at once or none): one
    worker for the whole fit, meeting the others through the server between sweeps.
    `job`: master, name, vocabulary, k, alpha, beta, iterations,
    mh_steps, sampler, evaluate_every, seed."""

    def __init__(self, job: dict) -> None:
        self.job = job

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext
        job = self.job
        context = BarrierTaskContext.get()
        p, tasks = context.partitionId(), len(context.getTaskInfos())
        docs = tokens(read_counts(batches, job["vocabulary"]))
        client = executor_client(job["master"])
        name, V, beta = job["name"], job["vocabulary"], job["beta"]
        worker = Worker(client.aio, name, docs, k=job["k"], alpha=job["alpha"], beta=beta,
                        mh_steps=job["mh_steps"], exact=job["sampler"] == "exact",
                        seed=job["seed"], index=p)
        meeting = Meeting(client, name, ARRIVALS, tasks, who=f"LDA task {p}",
                          timeout=MEETING_TIMEOUT)
        client.run(worker.initialize())
        meeting.wait()  # every initial topic is counted before anyone samples
        every = job["evaluate_every"]
        for it in range(job["iterations"]):
            evaluate = every > 0 and (it + 1) % every == 0
            sweep = client.run(worker.sweep(it, evaluate))  # its pushes have landed
            client.push_rows(name, PROGRESS, [it], np.array(
                [[1, sweep.tokens, sweep.doc_loglik, sweep.token_loglik, sweep.seconds]]))
            meeting.wait()  # every task swept and reported
            if p == 0:
                summed = client.pull_rows(name, PROGRESS, [it])[0]
                value = client.run(log_likelihood(client.aio, name, V, beta, float(summed[2])))
                client.push_rows(name, LIKELIHOOD, [it], np.array([[1.0, value]]))
            meeting.wait()  # nobody samples while task 0 reads the counts
        yield pa.RecordBatch.from_arrays(
            [pa.array([p], pa.int32()), pa.array([docs.documents], pa.int64()),
             pa.array([docs.words.size], pa.int64())], names=["part", "documents", "tokens"])


class IterationLog(TableProgress):
    """While fit's job runs: log each iteration once task 0 has written its
    log-likelihood (the tasks' rows in `progress` are complete by then): log-likelihood,
    training perplexity (every evaluate_every iterations), tokens/s; `history` after,
    one entry per iteration: iteration, log_likelihood, perplexity (None when not
    evaluated), seconds (the tasks' mean sweep), tokens_per_s. The entries are the
    model's training gauges too."""

    def __init__(self, client, name: str, iterations: int, evaluate_every: int) -> None:
        super().__init__(client, name, LIKELIHOOD, iterations, 1,
                         self._iteration, logger=log, report_as=name)
        self.name, self.evaluate_every = name, evaluate_every

    def _iteration(self, it: int, row: np.ndarray) -> dict:
        tasks, n, _, token_ll, seconds = (float(x) for x in self.client.pull_rows(
            self.name, PROGRESS, [it])[0])
        every = self.evaluate_every
        evaluated = every > 0 and (it + 1) % every == 0
        perplexity = math.exp(-token_ll / n) if evaluated and n else None
        mean_seconds = seconds / max(tasks, 1)
        entry = {"iteration": it, "log_likelihood": float(row[1]), "perplexity": perplexity,
                 "seconds": mean_seconds, "tokens_per_s": n / max(mean_seconds, 1e-9)}
        shown = "" if perplexity is None else f", perplexity {perplexity:.1f}"
        log.info("LDA iteration %d/%d: log-likelihood %.6g%s, %.0f tokens/s", it + 1,
                 self.rows, entry["log_likelihood"], shown, entry["tokens_per_s"])
        return entry

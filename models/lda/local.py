"""`LocalLDA`: latent Dirichlet allocation by collapsed Gibbs sampling on the parameter
server, from plain Python (the `lda` package's and scikit-learn's shapes).

    model = LocalLDA(k=20, iterations=100).fit(X)   # X: CSR document-term counts
    model.top_words(10, vocabulary)                  # each topic's most probable words
    theta = model.transform(X_new)                   # topic distributions, topics fixed
    model.save("lda.npz"); LocalLDA.load("lda.npz")

`fit` creates the word-topic counts on the cluster at `master` (or on an embedded
LocalCluster), splits the documents into `num_workers` contiguous shares, and runs one
`models.lda.worker.Worker` per share, each sampling its blocks on its own core. After each
iteration it computes the collapsed log-likelihood (and, every `evaluate_every`
iterations, the training perplexity), reports them to the master, the progress bar and
`callback(iteration, entry)`, and keeps them in `history_`. At the end the counts come
back to the estimator and the server's model is destroyed (unless it is `name`d on an
external `master`); `transform`, `perplexity` and `save` need no server.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from psframework import AsyncClient, ConfigError
from models.lda.corpus import Tokens, counts, tokens
from models.lda.evaluate import fold_in, log_likelihood as docs_log_likelihood
from models.lda.plugin import WORD_TOPIC
from models.lda.spec import SPEC
from models.lda.worker import Sweep, Worker, log_likelihood
from models.local_estimator import LocalEstimator

__all__ = ["LocalLDA"]


class LocalLDA(LocalEstimator):
    """Hyper-parameters (keyword-only; defaults, ranges and docs in `models.lda.spec`,
    listed by `help(LocalLDA.__init__)`): k, alpha, beta, iterations, mh_steps, sampler,
    evaluate_every, num_workers, seed, name, master, num_shards. callback(iteration,
    entry) after every iteration of `fit`."""

    SPEC = SPEC
    # set from SPEC by LocalEstimator.__init__ (tests/test_local_api.py checks them)
    k: int
    alpha: float
    beta: float
    iterations: int
    mh_steps: int
    sampler: str
    evaluate_every: int
    num_workers: int
    seed: int
    name: str | None
    history_: list[dict[str, Any]]
    _word_topic: np.ndarray  # (V, k) int32 counts, as the server holds them, once fitted
    _workers: list[Worker]  # fit's, whose documents and topics assignments_ reads

    # -- training ------------------------------------------------------------------------
    def fit(self, docs: Any, y: Any = None) -> "LocalLDA":
        """Sample the topics of `docs`: a CSR document-term count matrix (documents ×
        vocabulary) or a list of int arrays of word ids. A list's vocabulary is its
        largest id + 1."""
        self._validate()
        corpus = tokens(docs)
        if corpus.words.size == 0:
            raise ConfigError("LocalLDA.fit: the documents hold no tokens")
        self.__dict__.pop("topic_word_", None)
        self.history_ = []
        self._on_cluster(lambda master: self._fit(master, corpus))
        return self

    async def _fit(self, master: str, corpus: Tokens) -> None:
        name = self.name or f"lda-{uuid.uuid4().hex[:12]}"
        V = corpus.vocabulary
        async with AsyncClient(master) as client:
            await client.create_model(name, "lda", {"vocabulary": V, "k": self.k,
                                                    "beta": self.beta})
            try:
                edges = np.searchsorted(corpus.doc_ptr, np.linspace(
                    0, corpus.words.size, self.num_workers + 1)[1:-1], side="left")
                edges = np.concatenate([[0], edges, [corpus.documents]]).astype(np.int64)
                workers = [Worker(client, name, corpus.slice(int(a), int(b)), k=self.k,
                                  alpha=self.alpha, beta=self.beta, mh_steps=self.mh_steps,
                                  exact=self.sampler == "exact", seed=self.seed, index=w)
                           for w, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
                self._workers = workers
                await asyncio.gather(*(w.initialize() for w in workers))
                await self._iterations(client, name, V, workers)
                self._word_topic = await client.pull_rows(name, WORD_TOPIC, np.arange(V))
            finally:
                if self.name is None or self.master is None:
                    await client.destroy(name)

    async def _iterations(self, client: AsyncClient, name: str, V: int,
                          workers: list[Worker]) -> None:
        n_tokens = sum(int(w.docs.words.size) for w in workers)
        bar = self._bar(self.iterations * n_tokens, "tokens", "lda")
        try:
            for it in range(self.iterations):
                evaluate = self.evaluate_every > 0 and (it + 1) % self.evaluate_every == 0
                began = time.perf_counter()
                sweeps = await asyncio.gather(*(w.sweep(it, evaluate) for w in workers))
                total = sum(sweeps, Sweep())
                loglik = await log_likelihood(client, name, V, self.beta, total.doc_loglik)
                seconds = time.perf_counter() - began
                rate = n_tokens / max(seconds, 1e-9)
                gauges = {"log_likelihood": loglik, "tokens_per_s": rate}
                if evaluate:
                    gauges["perplexity"] = math.exp(-total.token_loglik / n_tokens)
                entry = {"iteration": it, "log_likelihood": loglik,
                         "perplexity": gauges.get("perplexity"),
                         "moved": total.moved / n_tokens, "seconds": seconds,
                         "tokens_per_s": rate}
                self.history_.append(entry)
                await client.report(name, iteration=it + 1, **gauges)
                if bar is not None:
                    bar.update(n_tokens)
                    bar.set_postfix({k: f"{v:.5g}" for k, v in gauges.items()})
                if self.callback is not None:
                    self.callback(it, entry)
        finally:
            if bar is not None:
                bar.close()

    # -- the fitted model ----------------------------------------------------------------
    def _fitted(self) -> np.ndarray:
        if not hasattr(self, "_word_topic"):
            raise ConfigError("this LocalLDA is not fitted; call fit() or load()")
        return self._word_topic

    @property
    def word_topic_counts_(self) -> np.ndarray:
        """The word-topic counts n_wk as the server held them at the end of fit: V × k,
        int32 (`from_counts` takes them back)."""
        return self._fitted()

    @property
    def vocabulary_size(self) -> int:
        return self._fitted().shape[0]

    @property
    def components_(self) -> np.ndarray:
        """The topics' word pseudo-counts n_kw + β (k × V, float64), as the `lda` package's
        and scikit-learn's components_."""
        return self._fitted().T + self.beta

    @cached_property
    def topic_word_(self) -> np.ndarray:
        """Each topic's word distribution (n_kw + β) / (n_k + Vβ): k × V, rows sum to 1."""
        c = self.components_
        return c / c.sum(axis=1, keepdims=True)

    @property
    def assignments_(self) -> list[np.ndarray]:
        """The topic of every token of each training document (the documents' tokens in
        word-id order, as `fit` read them), as the sampler left them: after fit, or
        during it (from `callback`)."""
        if not hasattr(self, "_workers"):
            raise AttributeError("assignments_: this LocalLDA holds no training documents "
                                 "(not fitted, or loaded)")
        return [w.z[w.docs.doc_ptr[d]:w.docs.doc_ptr[d + 1]]
                for w in self._workers for d in range(w.docs.documents)]

    @property
    def doc_topic_(self) -> np.ndarray:
        """The training documents' topic distributions from their final assignments,
        (n_dk + α) / (L_d + kα): documents × k."""
        self._fitted()
        if not hasattr(self, "_workers"):
            raise ConfigError("doc_topic_ needs the training assignments, which a loaded "
                              "model does not keep; use transform(docs)")
        n = np.array([np.bincount(z, minlength=self.k) for z in self.assignments_],
                     dtype=np.float64).reshape(-1, self.k)
        return (n + self.alpha) / (n.sum(axis=1, keepdims=True) + self.k * self.alpha)

    def transform(self, docs: Any) -> np.ndarray:
        """The documents' topic distributions with the topics fixed (`evaluate.fold_in`,
        deterministic): documents × k, rows summing to 1."""
        return fold_in(counts(docs, self.vocabulary_size), self.topic_word_, self.alpha)

    def fit_transform(self, docs: Any, y: Any = None) -> np.ndarray:
        return self.fit(docs).transform(docs)

    def score(self, docs: Any) -> float:
        """Σ log p(w | θ_d, φ) over the documents' tokens, θ_d folded in on each whole
        document (scikit-learn's `score`: higher is better)."""
        X = counts(docs, self.vocabulary_size)
        return docs_log_likelihood(X, self.topic_word_, fold_in(X, self.topic_word_, self.alpha))

    def perplexity(self, docs: Any) -> float:
        """exp(-score(docs) / tokens) (lower is better). For held-out documents,
        `evaluate.completion_perplexity` scores half of each document with θ from the
        other half."""
        return float(math.exp(-self.score(docs) / max(int(counts(docs).sum()), 1)))

    def top_words(self, n: int = 10, vocabulary: Any = None) -> list[list]:
        """Each topic's n most probable words, most probable first: word ids, or
        vocabulary[id] when a vocabulary (a sequence of V words) is given."""
        phi = self.topic_word_
        if vocabulary is not None and len(vocabulary) != phi.shape[1]:
            raise ConfigError(f"vocabulary has {len(vocabulary)} words, the model "
                              f"{phi.shape[1]}")
        top = np.argsort(-phi, axis=1, kind="stable")[:, :n]
        return [[vocabulary[i] for i in row] if vocabulary is not None else row.tolist()
                for row in top]

    @classmethod
    def from_counts(cls, word_topic: np.ndarray, **params: Any) -> "LocalLDA":
        """A fitted LocalLDA holding the word-topic counts `word_topic` (V × k, as the
        server and `LDAModel` hold them) and the hyper-parameters `params`."""
        model = cls(**params)
        model._validate()
        word_topic = np.asarray(word_topic)
        if word_topic.ndim != 2 or word_topic.shape[1] != model.k or word_topic.dtype.kind != "i":
            raise ConfigError(f"word_topic must be integer counts of shape (vocabulary, "
                              f"{model.k}), got {word_topic.dtype} {word_topic.shape}")
        model._word_topic = word_topic.astype(np.int32)
        return model

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """The counts, hyper-parameters and history in one .npz file."""
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, word_topic=self._fitted(), params=np.array(json.dumps(self.get_params())),
                     history=np.array(json.dumps(getattr(self, "history_", []))))

    @classmethod
    def load(cls, path: str | Path) -> "LocalLDA":
        """A fitted LocalLDA from `save` (no server needed)."""
        with np.load(Path(path), allow_pickle=False) as f:
            model = cls(**json.loads(str(f["params"])))
            model._word_topic = f["word_topic"]
            model.history_ = json.loads(str(f["history"]))
        return model

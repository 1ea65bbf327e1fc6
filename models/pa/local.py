"""`LocalPA`: online passive-aggressive classification on the parameter server, from plain
Python, scikit-learn-style.

    model = LocalPA(variant="pa1", C=1.0, hash_bits=18)
    for X, y in stream:                       # CSR matrices, or examples to hash
        model.partial_fit(X, y, classes=[0, 1])
    model.predict(X_new); model.close()      # weights kept in the estimator

The weights live on the parameter server from the first `partial_fit` (or `fit`) until
`close()`: on the cluster at `master`, or on an embedded LocalCluster started for this
estimator. While attached, every call learns from or scores with the current weights on
the server, so other processes may learn into the same model (name it with `name`; a
named model on an external cluster outlives `close()` and a new LocalPA with that name
continues from it). After `close()` (or `load`) predict, decision_function, coef_ and
save need no server; the next partial_fit pushes the weights to a new server model.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import scipy.sparse as sp

from psframework import Client, ConfigError, LocalCluster
from models.local_estimator import LocalEstimator
from models.pa.data import Classes, as_csr
from models.pa.kernels import margins
from models.pa.spec import SPEC
from models.pa.worker import TABLE, Learner, delta_scale, pull_margins

__all__ = ["LocalPA"]


class LocalPA(LocalEstimator):
    """Hyper-parameters (keyword-only; defaults, ranges and docs in `models.pa.spec`,
    listed by `help(LocalPA.__init__)`): variant, C, hash_bits, fit_intercept,
    batch_size, num_workers (1 worker with batch_size=1 is the exact online algorithm),
    mixing, max_iter, shuffle, seed, name, master, num_shards. callback(epoch, entry)
    is called after every epoch of `fit`."""

    SPEC = SPEC
    # the hyper-parameters, set from SPEC by LocalEstimator.__init__ (tests/test_local_api.py
    # checks these annotations against SPEC.local)
    variant: str
    C: float
    hash_bits: int
    fit_intercept: bool
    batch_size: int
    num_workers: int
    mixing: str
    max_iter: int
    shuffle: bool
    seed: int
    name: str | None
    _classes: Classes  # absent until something is learned or loaded
    history_: list[dict[str, Any]]
    _ps: dict | None = None  # client, cluster, model name, learner while attached
    _weights: np.ndarray | None = None  # (n_features + 1, n_weights) when detached

    @property
    def n_features(self) -> int:
        return 1 << self.hash_bits

    # -- the model on the server ---------------------------------------------------------
    def _attach(self, explicit: bool = False, fresh: bool = False) -> Learner:
        """Connect (starting an embedded cluster if need be) and create the model, or
        join the one of this name and take its classes (refusing other `explicit` ones;
        `fresh`: destroy it first); weights held here move to it."""
        if self._ps is not None:
            return self._ps["learner"]
        self._validate()
        cluster: LocalCluster | None = None
        if self.master is None:
            cluster = self._embedded()
            address = cluster.address
        else:
            address = self.master
        stop = weakref.finalize(self, cluster.stop) if cluster else None
        client = Client(address)
        try:
            name = self.name or f"pa-{uuid.uuid4().hex[:12]}"
            if fresh and self.name is not None:
                client.destroy(name)
            info = client.create_model(name, "pa", {
                "n_features": self.n_features, "n_weights": self._classes.n_weights,
                "classes": self._classes.to_wire()}, exists_ok=self.name is not None)
            theirs = Classes.from_wire(info.config["classes"])
            if explicit and theirs.to_wire() != self._classes.to_wire():
                raise ConfigError(f"model {name!r} on the server has classes "
                                  f"{theirs.to_wire()}, not {self._classes.to_wire()}")
            if info.config["n_features"] != self.n_features:
                raise ConfigError(f"model {name!r} on the server has 2^"
                                  f"{info.config['n_features'].bit_length() - 1} features, "
                                  f"this LocalPA hash_bits={self.hash_bits}; use the same")
            self._classes = theirs
            learner = Learner(client.aio, name, self.n_features, variant=self.variant,
                              C=self.C, fit_intercept=self.fit_intercept)
            if self._weights is not None:
                client.push_rows(name, TABLE, np.arange(self.n_features + 1), self._weights)
                self._weights = None
        except BaseException:
            client.close()
            if stop:
                stop()
            raise
        self._ps = {"client": client, "stop": stop, "name": name, "learner": learner}
        return learner

    def close(self) -> None:
        """Keep the weights here and leave the server: the model is destroyed there
        (unless it is named and on an external cluster) and an embedded cluster stops."""
        self._detach(keep_weights=True)

    def _detach(self, keep_weights: bool) -> None:
        if self._ps is None:
            return
        ps, self._ps = self._ps, None
        try:
            if keep_weights:
                self._weights = ps["client"].pull_rows(ps["name"], TABLE,
                                                       np.arange(self.n_features + 1))
            if not keep_weights or self.name is None or self.master is None:
                ps["client"].destroy(ps["name"])
        finally:
            ps["client"].close()
            if ps["stop"]:
                ps["stop"]()

    def __enter__(self) -> "LocalPA":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- learning ------------------------------------------------------------------------
    def _learn(self, X: sp.csr_matrix, labels: np.ndarray) -> int:
        learner = self._attach()
        assert self._ps is not None  # attached
        client = self._ps["client"]
        n_batches = -(-X.shape[0] // self.batch_size)
        workers = min(self.num_workers, max(n_batches, 1))

        async def together() -> int:
            scale = delta_scale(self.mixing, workers)
            done = await asyncio.gather(*(learner.learn(X, labels, self.batch_size,
                                                        range(w, n_batches, workers), scale)
                                          for w in range(workers)))
            return sum(done)
        return client.run(together())

    def partial_fit(self, X, y, classes=None) -> "LocalPA":
        """Learn from one batch of examples, in order. X: CSR or a 2-d array, (index,
        value) pairs per example, or raw examples to hash (`data.as_csr`). `classes`:
        every label the stream will hold (needed on the first call unless this batch
        holds them all)."""
        self._partial_fit(X, y, classes)
        return self

    def _partial_fit(self, X, y, classes=None) -> int:
        """partial_fit, returning how many examples were predicted wrong just before
        they were learned (progressive validation)."""
        self._validate()
        X = as_csr(X, self.hash_bits)
        if not hasattr(self, "_classes"):
            first = Classes.of(classes if classes is not None else y)
            first.indices(y, X.shape[0])  # nothing changes unless the labels are good
            self._classes = first
            try:
                self._attach(explicit=classes is not None)
            except BaseException:
                del self._classes
                raise
        labels = self._classes.indices(y, X.shape[0])
        return self._learn(X, labels)

    def fit(self, X, y, classes=None) -> "LocalPA":
        """Forget what was learned and learn X, y for max_iter epochs (each in a fresh
        seeded order when `shuffle`). history_: per epoch, its progressive accuracy,
        seconds and examples/s."""
        self._validate()
        X = as_csr(X, self.hash_bits)
        found = Classes.of(classes if classes is not None else y)
        labels = found.indices(y, X.shape[0])
        self._forget()
        self._classes = found
        self._attach(explicit=True, fresh=True)
        ps = self._ps
        assert ps is not None  # attached
        self.history_ = []
        bar = self._bar(self.max_iter * X.shape[0], "examples", "pa")
        try:
            for epoch in range(self.max_iter):
                order = (np.random.default_rng([self.seed, epoch]).permutation(X.shape[0])
                         if self.shuffle else slice(None))
                began = time.perf_counter()
                mistakes = self._learn(X[order], labels[order])
                seconds = time.perf_counter() - began
                entry = {"epoch": epoch, "accuracy": 1 - mistakes / max(X.shape[0], 1),
                         "seconds": seconds, "examples_per_s": X.shape[0] / max(seconds, 1e-9)}
                self.history_.append(entry)
                ps["client"].report(ps["name"], epoch=epoch + 1, accuracy=entry["accuracy"],
                                    examples_per_s=entry["examples_per_s"])
                if bar is not None:
                    bar.update(X.shape[0])
                    bar.set_postfix(accuracy=f"{entry['accuracy']:.4f}",
                                    examples_s=f"{entry['examples_per_s']:,.0f}")
                if self.callback is not None:
                    self.callback(epoch, entry)
        finally:
            if bar is not None:
                bar.close()
        return self

    def _forget(self) -> None:
        self._detach(keep_weights=False)
        self._weights = None
        self.__dict__.pop("_classes", None)

    def fit_stream(self, batches: Iterable[tuple[Any, Any]], classes=None) -> Iterator[dict]:
        """Learn from (X, y) batches as they come, yielding after each one its
        progressive validation: every example is predicted with the weights just before
        it is learned from. Yields {"batch", "examples", "accuracy" (this batch's),
        "progressive_accuracy" (all so far), "examples_per_s"}."""
        seen = wrong = 0
        for i, (X, y) in enumerate(batches):
            began = time.perf_counter()
            mistakes = self._partial_fit(X, y, classes)
            n = len(y)
            seen, wrong = seen + n, wrong + mistakes
            yield {"batch": i, "examples": n, "accuracy": 1 - mistakes / max(n, 1),
                   "progressive_accuracy": 1 - wrong / max(seen, 1),
                   "examples_per_s": n / max(time.perf_counter() - began, 1e-9)}

    # -- scoring -------------------------------------------------------------------------
    @property
    def classes_(self) -> np.ndarray:
        """The labels, sorted (for binary labels classes_[1] is the positive class)."""
        if not hasattr(self, "_classes"):
            raise AttributeError("classes_: this LocalPA has learned nothing yet")
        return self._classes.values

    def _fitted(self) -> None:
        if not hasattr(self, "_classes"):
            raise ConfigError("this LocalPA has learned nothing yet; call partial_fit(), "
                              "fit() or load()")

    def decision_function(self, X) -> np.ndarray:
        """w · x + b: (examples,) for binary labels (> 0 predicts classes_[1]), else
        (examples, classes); with the server's current weights while attached."""
        self._fitted()
        X = as_csr(X, self.hash_bits)
        if self._ps is not None:
            out = self._ps["client"].run(pull_margins(self._ps["client"].aio, self._ps["name"],
                                                      self.n_features, X, self.fit_intercept))
        else:
            out = margins(X.indptr, X.indices, X.data, self._weights, self.fit_intercept)
        return out[:, 0] if out.shape[1] == 1 else out

    def predict(self, X) -> np.ndarray:
        """The predicted class of each example."""
        scores = self.decision_function(X)
        return self._classes.values[(scores > 0).astype(np.int64) if scores.ndim == 1
                                    else scores.argmax(axis=1)]

    def score(self, X, y) -> float:
        """Accuracy of predict(X) against y (scikit-learn's `score`)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def _all_weights(self) -> np.ndarray:
        self._fitted()
        if self._ps is not None:
            return self._ps["client"].pull_rows(self._ps["name"], TABLE,
                                                np.arange(self.n_features + 1))
        if self._weights is None:  # _fitted: learned, so attached or holding weights
            raise ConfigError("this LocalPA holds no weights; call partial_fit(), fit() or "
                              "load()")
        return self._weights

    @property
    def coef_(self) -> np.ndarray:
        """Weights as scikit-learn shapes them: (1, n_features) for binary labels, else
        (classes, n_features)."""
        return self._all_weights()[:-1].T.copy()

    @property
    def intercept_(self) -> np.ndarray:
        return self._all_weights()[-1].copy()

    @property
    def weights_(self) -> np.ndarray:
        """All weights as the server holds them: (n_features + 1) × n_weights, coef_.T
        with intercept_ as the last row."""
        return self._all_weights().copy()

    @classmethod
    def from_weights(cls, weights: np.ndarray, classes, **params: Any) -> "LocalPA":
        """A LocalPA holding `weights` (as `weights_` gives them) for `classes`."""
        model = cls(**params)
        model._classes = Classes.of(classes)
        shape = (model.n_features + 1, model._classes.n_weights)
        if weights.shape != shape:
            raise ConfigError(f"weights must have shape {shape} for hash_bits="
                              f"{model.hash_bits} and {len(model._classes)} classes, got "
                              f"{weights.shape}")
        model._weights = np.asarray(weights, np.float32)
        return model

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Weights, classes and hyper-parameters in one .npz file."""
        weights = self._all_weights()
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, weights=weights, classes=np.array(json.dumps(self._classes.to_wire())),
                     params=np.array(json.dumps(self.get_params())))

    @classmethod
    def load(cls, path: str | Path) -> "LocalPA":
        """A LocalPA holding the saved weights (not attached to any server)."""
        with np.load(Path(path), allow_pickle=False) as f:
            model = cls(**json.loads(str(f["params"])))
            model._weights = f["weights"]
            model._classes = Classes.from_wire(json.loads(str(f["classes"])))
        return model

"""Synthetic short messages with known labels (spam-filter-like), for examples, tests and
benchmarks of the text classifiers.

The generative story (all draws from one seed, so the same arguments give the same data):

1. A vocabulary of `vocabulary` words "w0", "w1", ... with Zipf(1.1) base frequencies.
2. Each class c gets a log-odds profile: for a random `informative` fraction of the
   words, a weight ~ N(0, signal); the others 0 (they are pure noise).
3. A message draws its class uniformly, its length from 1 + Poisson(length - 1), and its
   words i.i.d. from base(w) · exp(profile_c(w)), normalised.
4. A `label_noise` fraction of the labels is replaced by a uniformly drawn class (so a
   perfect classifier reaches about 1 - label_noise · (classes - 1) / classes).

Messages are lists of word strings, as `LocalPA` and the Spark estimator hash them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Messages", "make_messages"]


@dataclass(frozen=True)
class Messages:
    words: list[list[str]]  # each message's words, in order
    labels: np.ndarray  # int64 class of each message (noisy, as observed)
    true_labels: np.ndarray  # before label noise


def make_messages(n: int, *, classes: int = 2, vocabulary: int = 20_000, length: int = 20,
                  informative: float = 0.2, signal: float = 1.5, label_noise: float = 0.0,
                  seed: int = 0) -> Messages:
    """n messages of `classes` classes (see the module's story)."""
    rng = np.random.default_rng(seed)
    base = 1.0 / np.arange(1, vocabulary + 1) ** 1.1
    profile = rng.normal(0, signal, (classes, vocabulary)) * (
        rng.random((classes, vocabulary)) < informative)
    p = base * np.exp(profile)
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    truth = rng.integers(0, classes, n)
    lengths = 1 + rng.poisson(length - 1, n)
    ends = np.cumsum(lengths)
    draws = rng.random(ends[-1] if n else 0)
    owner = np.repeat(truth, lengths)
    words = np.empty(draws.size, np.int64)
    for c in range(classes):
        mine = owner == c
        words[mine] = np.minimum(np.searchsorted(cdf[c], draws[mine]), vocabulary - 1)
    names = np.array([f"w{i}" for i in range(vocabulary)], dtype=object)
    tokens = names[words].tolist()
    starts = ends - lengths
    messages = [tokens[s:e] for s, e in zip(starts.tolist(), ends.tolist())]
    labels = truth.copy()
    flipped = rng.random(n) < label_noise
    labels[flipped] = rng.integers(0, classes, int(flipped.sum()))
    return Messages(messages, labels, truth)

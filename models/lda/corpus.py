"""Documents as the LDA code reads them, from what users hold: a scipy CSR document-term
count matrix (as CountVectorizer makes) or a list of int arrays of word ids (one per token).

`Tokens` is the sampler's form (every token's word, documents as ranges); `counts` the
fold-in's (CSR). Both refuse what is not a corpus with an error that names the fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from psframework import ConfigError, ShapeError

__all__ = ["Tokens", "tokens", "counts"]


@dataclass(frozen=True)
class Tokens:
    doc_ptr: np.ndarray  # int64 (documents + 1): document d is tokens doc_ptr[d]..doc_ptr[d+1]
    words: np.ndarray  # int64 word id of each token
    vocabulary: int  # word ids are below it

    @property
    def documents(self) -> int:
        return self.doc_ptr.size - 1

    def slice(self, start: int, stop: int) -> "Tokens":
        """Documents start..stop (views)."""
        a, b = self.doc_ptr[start], self.doc_ptr[stop]
        return Tokens(self.doc_ptr[start:stop + 1] - a, self.words[a:b], self.vocabulary)


def _integral_counts(values: np.ndarray, what: str) -> np.ndarray:
    bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
    if bad.any():
        raise ConfigError(f"{what} must hold non-negative integer word counts (integers >= "
                          f"0); found {int(bad.sum())} such value(s), e.g. "
                          f"{values[bad][0]!r}: pass counts (e.g. from CountVectorizer), not "
                          "weights such as tf-idf")
    return values.astype(np.int64)


def counts(docs: Any, vocabulary: int | None = None) -> sp.csr_matrix:
    """docs as a canonical CSR count matrix (documents × vocabulary, int64 counts,
    duplicates summed, indices sorted; a new matrix: the caller's is left as it is).
    vocabulary: the number of columns (None: the matrix's, or the largest id + 1)."""
    if sp.issparse(docs) or isinstance(docs, np.ndarray) and docs.ndim == 2:
        X = sp.csr_matrix(docs, copy=True)
        if vocabulary is not None and X.shape[1] != vocabulary:
            raise ShapeError(f"documents have {X.shape[1]} columns (words), the model "
                             f"{vocabulary}: use the vocabulary the model was fitted on")
        X.sum_duplicates()
        X.sort_indices()
        X.data = _integral_counts(np.asarray(X.data, np.float64), "the document-term matrix")
        X.eliminate_zeros()
        return X
    if isinstance(docs, (str, bytes)) or not hasattr(docs, "__iter__"):
        raise ConfigError("documents must be a scipy CSR count matrix (documents × words) or "
                          f"a list of int arrays of word ids, not {type(docs).__name__}")
    rows = [np.asarray(d) for d in docs]
    for i, d in enumerate(rows):
        if d.ndim != 1 or (d.size and d.dtype.kind not in "iu"):
            raise ConfigError(f"document {i} must be a 1-d array of int word ids (got "
                              f"{d.dtype} of shape {d.shape}); map words to ids first, "
                              "e.g. with CountVectorizer's vocabulary_")
        if d.size and d.min() < 0:
            raise ConfigError(f"document {i} holds negative word ids")
    top = max((int(d.max()) + 1 for d in rows if d.size), default=0)
    V = top if vocabulary is None else vocabulary
    if top > V:
        raise ShapeError(f"word id {top - 1} is outside the model's vocabulary of {V} words")
    lengths = np.array([d.size for d in rows], np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    words = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    X = sp.csr_matrix((np.ones(words.size, np.int64), words, indptr), shape=(len(rows), V))
    X.sum_duplicates()
    return X


def tokens(docs: Any, vocabulary: int | None = None) -> Tokens:
    """docs as tokens: each document's word ids in word-id order, a word repeated as often
    as it occurs."""
    X = counts(docs, vocabulary)
    lengths = np.asarray(X.sum(axis=1)).ravel().astype(np.int64)
    doc_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    words = np.repeat(X.indices.astype(np.int64), X.data)
    return Tokens(doc_ptr, words, X.shape[1])

"""Synthetic implicit feedback with a known structure, for tests, examples and benchmarks.

The generative story (all draws from one seed, so the same arguments give the same data):

1. Each user belongs to one of ``n_clusters`` latent clusters (uniformly at random), and so
   does each item.
2. Artists: each artist belongs to one cluster (balanced, ``artist % n_clusters``). With
   probability ``artist_purity`` an item's artist is one of its own cluster's artists,
   otherwise any artist. So ``artist_purity=1`` makes the artist reveal the item's
   cluster, ``artist_purity=0`` makes it noise (the "uninformative" variant).
3. Item popularity is a power law: the item of popularity rank ``r`` (a random
   permutation of the items) has weight ``r ** -popularity_exponent`` (Zipf; exponent 0
   is uniform).
4. A user draws about ``interactions_per_user`` distinct items (1 + Poisson, at least 1):
   with probability ``1 - noise`` from the items of their own cluster, with probability
   ``noise`` from all items, in both cases in proportion to popularity (weighted sampling
   without replacement by the Gumbel-top-k trick).
5. ``test_fraction`` of each user's items (rounded, at most all but one) are held out in
   ``test``; every user keeps at least one item in ``train``.

What is learnable, and why side features help: only the cluster (plus popularity)
explains a user's items. A model must learn each item's cluster from its interactions;
with a power-law catalog most items have only a handful, so their identity embeddings are
poorly estimated. The artist feature is shared by many items, so it is learned from their
pooled interactions and, when ``artist_purity`` is high, carries the cluster to the rare
items. Compare ``item_features()`` with ``item_features(artist=False)`` (identity only),
or with a dataset made with ``artist_purity=0``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["SyntheticData", "make_synthetic", "popularity_scores"]


@dataclass(frozen=True, eq=False, slots=True)
class SyntheticData:
    """A generated dataset. Matrices are CSR ``float32`` with ones at the interactions;
    ``train + test == interactions`` and ``train`` and ``test`` share no entry."""

    interactions: sp.csr_matrix
    train: sp.csr_matrix
    test: sp.csr_matrix
    user_cluster: np.ndarray
    """(n_users,) int64: each user's latent cluster (ground truth, not a feature)."""
    item_cluster: np.ndarray
    """(n_items,) int64: each item's latent cluster."""
    item_artist: np.ndarray
    """(n_items,) int64: each item's artist, in ``range(n_artists)``."""
    n_artists: int

    @property
    def n_users(self) -> int:
        return self.interactions.shape[0]

    @property
    def n_items(self) -> int:
        return self.interactions.shape[1]

    def item_features(self, *, identity: bool = True, artist: bool = True) -> sp.csr_matrix:
        """Item features as CSR ``(n_items, n_items * identity + n_artists * artist)``:
        the identity one-hot in the first ``n_items`` columns, then the artist one-hot,
        every weight 1.0 (normalize the rows if your model wants them to sum to 1)."""
        if not (identity or artist):
            raise ValueError("choose at least one of identity and artist features")
        blocks = []
        if identity:
            blocks.append(sp.identity(self.n_items, dtype=np.float32, format="csr"))
        if artist:
            blocks.append(_one_hot(self.item_artist, self.n_artists))
        return sp.hstack(blocks, format="csr")

    def user_features(self) -> sp.csr_matrix:
        """User features as CSR ``(n_users, n_users)``: each user's identity one-hot."""
        return sp.identity(self.n_users, dtype=np.float32, format="csr")


def make_synthetic(*, n_users: int = 1000, n_items: int = 2000, n_clusters: int = 10,
                   n_artists: int = 200, interactions_per_user: float = 20.0,
                   noise: float = 0.1, popularity_exponent: float = 1.0,
                   artist_purity: float = 0.9, test_fraction: float = 0.2,
                   seed: int = 0) -> SyntheticData:
    """Generate a dataset as described in the module docstring.

    ``interactions_per_user`` is the mean number of distinct items per user (capped by
    the items a user can reach: with ``noise=0`` only their cluster's items).
    """
    if min(n_users, n_items, n_clusters) < 1:
        raise ValueError("n_users, n_items and n_clusters must be at least 1")
    if n_artists < n_clusters:
        raise ValueError(f"n_artists ({n_artists}) must be at least n_clusters "
                         f"({n_clusters}) so that every cluster has an artist")
    for name, value in (("noise", noise), ("artist_purity", artist_purity),
                        ("test_fraction", test_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if interactions_per_user < 1 or popularity_exponent < 0:
        raise ValueError("interactions_per_user must be >= 1 and popularity_exponent >= 0")
    structure, sampling, splitting = (np.random.default_rng(s)
                                      for s in np.random.SeedSequence(seed).spawn(3))

    user_cluster = structure.integers(n_clusters, size=n_users)
    item_cluster = structure.integers(n_clusters, size=n_items)
    artist_cluster = np.arange(n_artists) % n_clusters
    artists_per_cluster = np.bincount(artist_cluster, minlength=n_clusters)
    own = item_cluster + n_clusters * structure.integers(artists_per_cluster[item_cluster])
    anyone = structure.integers(n_artists, size=n_items)
    item_artist = np.where(structure.random(n_items) < artist_purity, own, anyone)
    rank = structure.permutation(n_items) + 1
    popularity = rank.astype(np.float64) ** -popularity_exponent

    # Per cluster, the probability of each item for one draw of a user of that cluster.
    in_cluster = item_cluster[None, :] == np.arange(n_clusters)[:, None]
    clustered = popularity * in_cluster
    totals = clustered.sum(axis=1, keepdims=True)
    clustered = np.divide(clustered, totals, out=np.zeros_like(clustered), where=totals > 0)
    uniform = popularity / popularity.sum()
    own_weight = np.where(totals > 0, 1.0 - noise, 0.0)
    with np.errstate(divide="ignore"):
        log_p = np.log(own_weight * clustered + (1.0 - own_weight) * uniform)
    reachable = np.isfinite(log_p).sum(axis=1)

    counts = 1 + sampling.poisson(interactions_per_user - 1.0, size=n_users)
    counts = np.minimum(counts, reachable[user_cluster])
    interactions = _sample_without_replacement(log_p[user_cluster], counts, sampling)
    train, test = _split(interactions, test_fraction, splitting)
    return SyntheticData(interactions=interactions, train=train, test=test,
                         user_cluster=user_cluster.astype(np.int64),
                         item_cluster=item_cluster.astype(np.int64),
                         item_artist=item_artist.astype(np.int64), n_artists=n_artists)


def popularity_scores(train: sp.spmatrix) -> Callable[[np.ndarray], np.ndarray]:
    """The popularity baseline as a score callable for ``models.metrics``: every user
    gets each item's number of training interactions (ties rank by item index)."""
    counts = np.asarray((sp.csr_matrix(train) != 0).sum(axis=0), dtype=np.float64).ravel()

    def score(users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts, (len(users), counts.size))
    return score


def _one_hot(values: np.ndarray, width: int) -> sp.csr_matrix:
    n = values.size
    return sp.csr_matrix((np.ones(n, dtype=np.float32), values, np.arange(n + 1)),
                         shape=(n, width))


def _sample_without_replacement(log_p: np.ndarray, counts: np.ndarray,
                                rng: np.random.Generator,
                                chunk: int = 1024) -> sp.csr_matrix:
    """Row ``u`` takes ``counts[u]`` distinct items with probabilities ``exp(log_p[u])``,
    as successive draws without replacement would (Gumbel-top-k)."""
    n_users, n_items = log_p.shape
    rows, cols = [], []
    for start in range(0, n_users, chunk):
        keys = log_p[start:start + chunk] + rng.gumbel(size=(min(chunk, n_users - start),
                                                             n_items))
        need = counts[start:start + chunk]
        width = int(need.max())
        best = np.argpartition(-keys, width - 1, axis=1)[:, :width]
        best = np.take_along_axis(
            best, np.argsort(-np.take_along_axis(keys, best, axis=1), axis=1), axis=1)
        keep = np.arange(width)[None, :] < need[:, None]
        rows.append(np.nonzero(keep)[0] + start)
        cols.append(best[keep])
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    matrix = sp.csr_matrix((np.ones(rows_all.size, dtype=np.float32), (rows_all, cols_all)),
                           shape=(n_users, n_items))
    matrix.sort_indices()
    return matrix


def _split(interactions: sp.csr_matrix, test_fraction: float,
           rng: np.random.Generator) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    per_user = np.diff(interactions.indptr)
    n_test = np.minimum(np.floor(per_user * test_fraction + 0.5), per_user - 1)
    rows = np.repeat(np.arange(interactions.shape[0]), per_user)
    order = np.lexsort((rng.random(rows.size), rows))
    position = np.empty(rows.size, dtype=np.int64)
    position[order] = np.arange(rows.size) - interactions.indptr[rows[order]]
    held_out = position < n_test[rows]
    coo = interactions.tocoo()
    parts = []
    for mask in (~held_out, held_out):
        part = sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])),
                             shape=interactions.shape)
        part.sort_indices()
        parts.append(part)
    return parts[0], parts[1]

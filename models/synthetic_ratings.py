"""Synthetic explicit ratings with a known structure (MovieLens-like), for examples and
benchmarks of the rating-prediction models.

The generative story (all draws from one seed, so the same arguments give the same data):

1. User and item factors p_u, q_i ~ N(0, factor_std) of `rank` dimensions, and biases
   b_u, b_i ~ N(0, bias_std).
2. Each user rates a uniform random set of distinct items, between half and 1.5 times
   `ratings_per_user` of them.
3. A rating is offset + b_u + b_i + ⟨p_u, q_i⟩ + ε, ε ~ N(0, sigma), clipped to `clip`
   (continuous, not rounded).
4. `test_fraction` of each user's ratings (rounded, at least one) are held out in `test`.

`test_true` (the noiseless score) gives the floor any model can reach on the test set, a
little under sigma because of the clipping; `test_biases` (offset + b_u + b_i) what a
model that learns the biases perfectly and no factors would reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SyntheticRatings", "make_ratings"]

Ratings = tuple[np.ndarray, np.ndarray, np.ndarray]  # users, items, ratings


@dataclass(frozen=True)
class SyntheticRatings:
    train: Ratings
    test: Ratings
    test_true: np.ndarray    # the noiseless score of each test rating
    test_biases: np.ndarray  # offset + b_u + b_i of each test rating


def make_ratings(n_users: int, n_items: int, ratings_per_user: int, *, rank: int = 10,
                 factor_std: float = 0.3, bias_std: float = 0.3, offset: float = 3.5,
                 sigma: float = 0.5, clip: tuple[float, float] = (1.0, 5.0),
                 test_fraction: float = 0.1, seed: int = 0) -> SyntheticRatings:
    rng = np.random.default_rng(seed)
    P = rng.normal(0, factor_std, (n_users, rank))
    Q = rng.normal(0, factor_std, (n_items, rank))
    bu, bi = rng.normal(0, bias_std, n_users), rng.normal(0, bias_std, n_items)
    counts = rng.integers(ratings_per_user // 2, ratings_per_user * 3 // 2 + 1, n_users)
    user_rows: list[np.ndarray] = []
    item_rows: list[np.ndarray] = []
    test_rows: list[np.ndarray] = []
    for u, k in enumerate(counts):
        chosen = rng.choice(n_items, size=k, replace=False)  # in random order
        held = np.zeros(k, bool)
        held[:max(1, int(round(test_fraction * k)))] = True
        user_rows.append(np.full(k, u))
        item_rows.append(chosen)
        test_rows.append(held)
    users, items = np.concatenate(user_rows), np.concatenate(item_rows)
    test = np.concatenate(test_rows)
    biases = offset + bu[users] + bi[items]
    true = biases + np.einsum("nd,nd->n", P[users], Q[items])
    ratings = np.clip(true + rng.normal(0, sigma, true.size), *clip)
    train = ~test
    return SyntheticRatings(train=(users[train], items[train], ratings[train]),
                            test=(users[test], items[test], ratings[test]),
                            test_true=true[test], test_biases=biases[test])

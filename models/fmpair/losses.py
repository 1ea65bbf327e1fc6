"""Worker side of one mini-batch: which (user, item) pairs to score, and the coefficient
(d objective / d score, the ascent direction) of each pair once the scores are known.

A batch of B positives (u_b, i_b) becomes user bags (B), item bags and `pairs` (B × 1+M):
column 0 is the positive, columns 1..M are candidate negatives, `valid` marks the
candidates the acceptance rules let through. With the uniform or exp sampler the
candidates are sampled items, sent as extra item bags; with the crossbatch sampler they
are other examples' positives in the same batch, so no extra bags are sent at all.

Losses, with x_bm = score(u_b, i_b) - score(u_b, j_bm) over the valid candidates; the
worker sends one coefficient per difference, c_bm = d objective / d x_bm, and the shard
applies +c_bm to the positive's score and -c_bm to the candidate's:
- bpr:  mean over valid m of -log σ(x_bm)  (M = 1 unless crossbatch);
        c_bm = σ(-x_bm) / n_valid.
- warp: the first valid candidate with x < 1 (a margin violation) found after t draws
        gets weight w = min(log(max(1, floor((n_items - 1) / t))), 10) (LightFM's rank
        estimate and its MAX_LOSS cap) and the hinge loss w · (1 - x): c = w on that
        candidate; no violation, no update (its bags take no step at all, not even
        regularization).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.fmpair.features import Bags, FeatureSpace, compact, concat_bags
from models.fmpair.sampling import NegativeSampler

__all__ = ["LOSSES", "Batch", "prepare", "coefficients"]

LOSSES = ("bpr", "warp")
MAX_WARP_WEIGHT = 10.0  # LightFM's MAX_LOSS: binds beyond e**10 ≈ 22,000 items


@dataclass(frozen=True)
class Batch:
    users: np.ndarray
    items: np.ndarray
    user_bags: Bags
    item_bags: Bags
    pairs: np.ndarray  # B × (1 + M) indices into the item bags
    valid: np.ndarray  # B × M: candidate accepted

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The dotprod request: bags in wire form, and the pairs unless they follow the
        standard layout (candidates after the positives, in order) the shard assumes."""
        b, m = self.pairs.shape[0], self.pairs.shape[1] - 1
        standard = (self.item_bags[0].size - 1 == b * (1 + m)
                    and np.array_equal(self.pairs, standard_pairs(b, m)))
        pairs = np.empty(0, np.int32) if standard else self.pairs.astype(np.int32)
        return (*compact(self.user_bags), *compact(self.item_bags), pairs)


def standard_pairs(b: int, m: int) -> np.ndarray:
    """Positive b is item bag b; its candidates are bags b + b·m + 1 … (after all positives)."""
    return np.concatenate([np.arange(b)[:, None], b + np.arange(b * m).reshape(b, m)], axis=1)


def candidates_per_example(loss: str, sampler: str, num_negatives: int) -> int:
    return 1 if (loss == "bpr" and sampler != "crossbatch") else num_negatives


def prepare(users: np.ndarray, items: np.ndarray, space: FeatureSpace,
            sampler: NegativeSampler, rng: np.random.Generator, m: int,
            positives: np.ndarray | None = None) -> Batch:
    """The batch for positives (users[b], items[b]); `positives` are their row numbers
    among the training positives, which select their context features."""
    b = users.size
    rows = np.arange(b)
    if sampler.kind == "crossbatch":
        # the others' positives; an example alone in its batch has none and counts nothing
        offsets = rng.integers(1, b, size=(b, m)) if b > 1 else np.zeros((b, m), np.int64)
        positions = (rows[:, None] + offsets) % b
        candidates = items[positions]
        item_bags = space.item_bags(items)
        pairs = np.concatenate([rows[:, None], positions], axis=1)
        valid = (~sampler.rejected(users[:, None], candidates) & (candidates != items[:, None])
                 & (positions != rows[:, None]))
    else:
        candidates, valid = sampler.sample(rng, users, m)
        item_bags = concat_bags(space.item_bags(items), space.item_bags(candidates.ravel()))
        pairs = standard_pairs(b, m)
    return Batch(users, items, space.user_bags(users, positives), item_bags,
                 pairs.astype(np.int64), valid)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def coefficients(loss: str, x: np.ndarray, valid: np.ndarray, n_items: int,
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, float, int]:
    """From x_bm = score(positive) - score(candidate m) (B × M): (the coefficient of each
    x_bm, d objective / d x_bm, as float32 B × M; summed loss; pairs that counted). The
    shard turns c_bm into +c_bm on the positive's score and -c_bm on the candidate's.
    `weights` (B, optional): each positive's weight in the loss (LightFM's
    sample_weight): it scales the positive's coefficients and its loss."""
    x = x.astype(np.float64)
    if loss == "bpr":
        n_valid = valid.sum(axis=1)
        share = np.where(valid, 1.0 / np.maximum(n_valid, 1)[:, None], 0.0)
        coef = _sigmoid(-x) * share
        row_loss = (np.logaddexp(0.0, -x) * share).sum(axis=1)
        counted = int((n_valid > 0).sum())
    else:
        coef = np.zeros(x.shape)
        row_loss = np.zeros(x.shape[0])
        violating = valid & (x < 1.0)
        rows = np.flatnonzero(violating.any(axis=1))
        first = np.argmax(violating[rows], axis=1)
        weight = np.minimum(np.log(np.maximum(1.0, np.floor((n_items - 1) / (first + 1)))),
                            MAX_WARP_WEIGHT)
        coef[rows, first] = weight
        row_loss[rows] = weight * (1.0 - x[rows, first])
        counted = int(rows.size)
    if weights is not None:
        w = np.asarray(weights, np.float64)
        coef, row_loss = coef * w[:, None], row_loss * w
    return coef.astype(np.float32), float(row_loss.sum()), counted

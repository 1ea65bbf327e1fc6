"""The Spark side of `FMPairModel`: the tasks that recommend, score and give the
factors, in Arrow blocks on the executors, from the model broadcast to them."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from psframework.spark import arrow
from models.frames import recommendations

__all__ = ["Recommend", "Score", "Factors"]


def _context(batch: pa.RecordBatch, width: int, given: str | None) -> sp.csr_matrix:
    """Each row's context: its `given` vector where it has one, else the one fit saw."""
    fit = arrow.vectors_to_csr(batch.column("_fit_context"), width, nulls="empty")
    if given is None:
        return fit
    mine = batch.column(given)
    use = sp.diags(np.asarray(mine.is_valid(), np.float32))
    return (use @ arrow.vectors_to_csr(mine, width, nulls="empty")
            + (sp.identity(len(mine), np.float32) - use) @ fit).tocsr()


class Recommend:
    """mapInArrow: users (id, exclude[, _fit_context][, _given][, _blocked]) to their top n."""

    def __init__(self, state, n: int, names: tuple[str, str], *, given: bool,
                 blocked: bool) -> None:
        self.state, self.n, self.names = state, n, names
        self.given, self.blocked = given, blocked

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        me = self.state.value
        n_items = me.space_.n_items
        width = me.space_.n_context_features
        for batch in batches:
            if not batch.num_rows:
                continue
            users = arrow.ids(batch.column("id"))
            exclude = arrow.lists_to_csr(batch.column("exclude"), n_items)
            if self.blocked:
                exclude = exclude + arrow.lists_to_csr(batch.column("_blocked"), n_items)
            context = (_context(batch, width, "_given" if self.given else None)
                       if width else None)
            top, scores = me.recommend(users, self.n, filter_seen=False, context=context,
                                       exclude=exclude)
            yield recommendations(users, top, scores, self.names)


class Score:
    """mapInArrow: rows to the same rows with the predicted score (NaN for an unknown
    user or item, as ALS's coldStartStrategy "nan") and, with `rank` (the rankCol),
    the item's rank among the user's candidates and their number
    (`models.spark_evaluation.candidate_ranks`): each user of a batch is scored against every
    item once, with the context fit saw, as recommendForAllUsers does. The rows then
    carry `_fit_id` (null for a user fit did not see) and `_exclude` from `users`."""

    def __init__(self, state, names: list[str], user: str, item: str, given: str | None,
                 prediction: str, rank: str | None = None) -> None:
        self.state, self.names, self.user, self.item = state, names, user, item
        self.given, self.prediction, self.rank = given, prediction, rank

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        me = self.state.value
        n_users, n_items = me.space_.n_users, me.space_.n_items
        width = me.space_.n_context_features
        item_side = me.item_representations()  # once per task, not per batch
        names = self.names + [self.prediction]
        if self.rank:
            from models.spark_evaluation import candidates_column
            names += [self.rank, candidates_column(self.rank)]
        for batch in batches:
            users = arrow.ids(batch.column(self.user))
            items = arrow.ids(batch.column(self.item))
            known = np.flatnonzero((users >= 0) & (users < n_users) & (items >= 0)
                                   & (items < n_items))
            out = np.full(batch.num_rows, np.nan)
            if known.size:
                context = None
                if width:
                    context = _context(batch.take(pa.array(known)), width, self.given)
                reps = me.user_representations(users[known], context)
                out[known] = me.pair_scores(reps, items[known], *item_side)
            arrays = [batch.column(n) for n in self.names] + [pa.array(out)]
            if self.rank:
                arrays += _ranks(me, batch, users, items, item_side)
            yield pa.RecordBatch.from_arrays(arrays, names=names)


def _ranks(me, batch: pa.RecordBatch, users: np.ndarray, items: np.ndarray,
           item_side: tuple[np.ndarray, np.ndarray]) -> list[pa.Array]:
    """The rank and candidates columns of a batch: its distinct users that fit saw are
    scored once each, their `_exclude` items left out."""
    from models.spark_evaluation import candidate_ranks, rank_arrays
    fitted = np.flatnonzero(np.asarray(batch.column("_fit_id").is_valid(), bool))
    distinct, first, inverse = np.unique(users[fitted], return_index=True,
                                         return_inverse=True)
    row_query = np.full(batch.num_rows, -1, np.int64)
    row_query[fitted] = inverse.ravel()
    one = batch.take(pa.array(fitted[first]))  # a row per distinct user
    width = me.space_.n_context_features
    context = _context(one, width, None) if width else None
    reps = me.user_representations(distinct, context)
    exclude = arrow.lists_to_csr(one.column("_exclude"), me.space_.n_items)
    return rank_arrays(*candidate_ranks(reps, *item_side, exclude, row_query, items))


class Factors:
    """mapInArrow: ids (with the fit context, for users) to their representations."""

    def __init__(self, state, side: str) -> None:
        self.state, self.side = state, side

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        me = self.state.value
        items: tuple[np.ndarray, np.ndarray] | None = None  # item_representations, once
        for batch in batches:
            rows = arrow.ids(batch.column("id"))
            if self.side == "user":
                width = me.space_.n_context_features
                context = _context(batch, width, None) if width else None
                out = [me.user_representations(rows, context)]
            else:
                if items is None:
                    items = me.item_representations()
                vectors, bias = items
                out = [vectors[rows], bias[rows]]
            arrays = [pa.array(rows), arrow.rows_to_lists(out[0])] + [pa.array(b) for b in out[1:]]
            names = ["id", "features", "bias"][:len(arrays)]
            yield pa.RecordBatch.from_arrays(arrays, names=names)

"""`FactorModel`: a fitted factor recommender with pyspark's ALSModel API, over a local
recommender (`models.recommender.LocalRecommender`) that holds the factors, so that
MFSGDModel and PureSVDModel say it once.

    model.transform(pairs)                    # predictionCol; rankCol as FMPair's
    model.recommendForAllUsers(10); model.recommendForUserSubset(users, 10)
    model.recommendForAllItems(5); model.recommendForItemSubset(items, 5)
    model.userFactors; model.itemFactors; model.rank; model.save(path)

score(u, i) = ⟨user u, item i⟩ + user bias + item bias, from the state's `_user_side`
and `_item_side` (MF-SGD: factors, μ + b_u and b_i; PureSVD: r_u·V and V, no biases).
The state lives in the driver and travels to the scoring tasks by broadcast, so the model
needs no parameter server. It knows the ids fit saw (`rated_users`, `rated_items`:
booleans by id); the others are cold-start (coldStartStrategy) and never recommended.
`users` (a DataFrame of (id, exclude): each training user's items) gives rankCol its
candidates and, for a model whose class sets `EXCLUDE_SEEN` (PureSVD: a top-N model),
leaves each user's training items out of its recommendations and each item's training
users out of the item's. Subclasses name their state's class and file (`LOCAL`,
`STATE_FILE`) and mix in their Params, which check a param's column by
`_check_columns(schema, param names)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, cast

import numpy as np
import pyarrow as pa
from pyspark.ml import Model
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame, SparkSession, functions as F, types as T

from psframework import ConfigError
from psframework.spark import arrow, ml, pin_local_interpreter
from models.recommender import LocalRecommender
from models.spark_estimator import (
    TopK, cold_start, held, int_ids, model_reader, model_writer, need_count,
    recommendations_schema,
)
from models.spark_evaluation import candidate_ranks, candidates_column, rank_arrays, rank_fields

__all__ = ["FactorModel"]


class FactorModel(Model, MLWritable, MLReadable):
    """ALS's model API over `state`, a fitted LocalRecommender (see the module
    docstring). `history`: per step of fit (an epoch, a pass), what the estimator
    logged; saved and loaded with the model."""

    LOCAL: Any  # the state's LocalRecommender class: its save/load write STATE_FILE
    STATE_FILE: str
    EXCLUDE_SEEN = False  # recommendations leave out the training pairs
    BIAS_COLUMN = True  # userFactors/itemFactors carry the state's user_bias_/item_bias_

    if TYPE_CHECKING:  # from the Params a subclass mixes in (an ml.ParamValues)
        def _value(self, name: str) -> Any: ...
        def _check_columns(self, schema: T.StructType, names: Iterable[str]) -> None: ...

    def __init__(self, state: LocalRecommender | None = None, rated_users=None,
                 rated_items=None, users: DataFrame | None = None) -> None:
        super().__init__()
        self.state, self.rated_users, self.rated_items = state, rated_users, rated_items
        self.users = users  # (id, exclude): each training user's items
        self.history: list[dict] = []

    @property
    def _state(self) -> Any:
        return held(self.state, self, "parameters")

    @property
    def _users(self) -> DataFrame:
        if self.users is None:
            raise ConfigError(f"this {type(self).__name__} does not have its users' training "
                              "items (saved before they were kept, or built without): fit "
                              "it again")
        return self.users

    @property
    def rank(self) -> int:
        """The latent dimensions, as ALSModel.rank (the estimator's param `rank`)."""
        return int(self._state.item_factors_.shape[1])

    def getRank(self) -> int:
        return self.rank

    def _shipped(self, spark: SparkSession):
        """What the scoring tasks need, broadcast: (state, rated_users, rated_items)."""
        pin_local_interpreter(spark.sparkContext)
        return spark.sparkContext.broadcast((self._state, self.rated_users, self.rated_items))

    # -- transform -------------------------------------------------------------------------
    def _transform(self, dataset: DataFrame) -> DataFrame:
        who = f"{type(self).__name__}.transform"
        user, item = self._value("userCol"), self._value("itemCol")
        self._check_columns(dataset.schema, ("userCol", "itemCol"))
        dataset = int_ids(dataset, (user, item), who)  # as ALS gives them
        names = dataset.columns
        prediction, rank = self._value("predictionCol"), self._value("rankCol")
        schema = T.StructType(dataset.schema.fields + [T.StructField(prediction,
                                                                     T.FloatType())]
                              + (rank_fields(rank) if rank else []))
        if rank:  # each row's user's training items, and whether fit saw the user
            known = self._users.select(F.col("id").alias("_fit_id"),
                                       F.col("exclude").alias("_exclude"))
            dataset = dataset.join(known, F.col(user).cast("long") == known["_fit_id"],
                                   "left")
        out = dataset.mapInArrow(Predict(self._shipped(dataset.sparkSession), names, user,
                                         item, prediction, rank), schema)
        return cold_start(out, cast(ml.ParamValues, self))

    # -- recommendations -------------------------------------------------------------------
    def _scoring(self, side: str) -> tuple[np.ndarray, ...]:
        """`TopK`'s (queries, targets, query bias, target bias, known queries) for
        recommending on `side`; targets fit never saw get -inf."""
        s = self._state
        n_users = s.user_factors_.shape[0]
        user_vectors, user_bias = s._user_side(np.arange(n_users))
        user_bias = np.zeros(n_users) if user_bias is None else user_bias
        item_vectors, item_bias = s._item_side()
        users = (user_vectors, user_bias, self.rated_users)
        items = (item_vectors, item_bias, self.rated_items)
        (q, qb, rated), (t, tb, known) = (users, items) if side == "user" else (items, users)
        return (np.asarray(q, np.float32), np.asarray(t, np.float32),
                np.asarray(qb, np.float32), np.where(known, tb, -np.inf).astype(np.float32),
                rated)

    def _recommend(self, ids: DataFrame, side: str, n) -> DataFrame:
        """ALS's recommendation rows for `ids` (column `id`; with EXCLUDE_SEEN, also
        `exclude`: each id's training targets)."""
        n = need_count(n, "numItems" if side == "user" else "numUsers")
        this, other = ((self._value("userCol"), self._value("itemCol")) if side == "user"
                       else (self._value("itemCol"), self._value("userCol")))
        pin_local_interpreter(ids.sparkSession.sparkContext)
        scoring = ids.sparkSession.sparkContext.broadcast(self._scoring(side))
        return ids.mapInArrow(TopK(scoring, n, (this, other), exclude=self.EXCLUDE_SEEN),
                              recommendations_schema(this, other))

    def _asked(self, ids: DataFrame, side: str) -> DataFrame:
        """`ids` (id) with, if EXCLUDE_SEEN, each one's training targets (`exclude`)."""
        if not self.EXCLUDE_SEEN:
            return ids
        seen = self._users.select("id", "exclude")
        if side == "item":  # an item's training users: those whose items hold it
            seen = (seen.select(F.explode("exclude").alias("item"), F.col("id").alias("user"))
                    .groupBy(F.col("item").alias("id")).agg(
                        F.collect_list("user").alias("exclude")))
        return ids.join(seen, "id", "left")

    def _rated(self, side: str) -> DataFrame:
        rated = np.flatnonzero(self.rated_users if side == "user" else self.rated_items)
        frame = SparkSession.active().createDataFrame(pa.table({"id": pa.array(rated)}))
        return self._asked(frame, side)

    def _subset(self, dataset: DataFrame, side: str) -> DataFrame:
        name = "userCol" if side == "user" else "itemCol"
        self._check_columns(dataset.schema, (name,))
        ids = dataset.select(F.col(self._value(name)).cast("long").alias("id")).where(
            "id IS NOT NULL").distinct()
        return self._asked(ids, side)

    def recommendForAllUsers(self, numItems: int) -> DataFrame:
        """Top `numItems` items per user fit saw, as ALS: (userCol, recommendations:
        array<struct<itemCol, rating>>)."""
        return self._recommend(self._rated("user"), "user", numItems)

    def recommendForUserSubset(self, dataset: DataFrame, numItems: int) -> DataFrame:
        """Top `numItems` items for each distinct user of `dataset` (userCol); a user fit
        did not see gets no row, as ALS."""
        return self._recommend(self._subset(dataset, "user"), "user", numItems)

    def recommendForAllItems(self, numUsers: int) -> DataFrame:
        """Top `numUsers` users per item fit saw: (itemCol, recommendations:
        array<struct<userCol, rating>>)."""
        return self._recommend(self._rated("item"), "item", numUsers)

    def recommendForItemSubset(self, dataset: DataFrame, numUsers: int) -> DataFrame:
        """Top `numUsers` users for each distinct item of `dataset` (itemCol)."""
        return self._recommend(self._subset(dataset, "item"), "item", numUsers)

    # -- factors ---------------------------------------------------------------------------
    def _factors(self, side: str) -> DataFrame:
        """(id, features[, bias]) of the ids fit saw on `side`, float32 as ALS's."""
        s = self._state
        ids = np.flatnonzero(self.rated_users if side == "user" else self.rated_items)
        factors = s.user_factors_ if side == "user" else s.item_factors_
        columns = {"id": pa.array(ids.astype(np.int32)),
                   "features": arrow.rows_to_lists(factors[ids])}
        if self.BIAS_COLUMN:
            bias = s.user_bias_ if side == "user" else s.item_bias_
            columns["bias"] = pa.array(np.asarray(bias[ids], np.float32))
        return SparkSession.active().createDataFrame(pa.table(columns))

    @property
    def userFactors(self) -> DataFrame:
        """(id, features[, bias]) of every user fit saw, as ALS's."""
        return self._factors("user")

    @property
    def itemFactors(self) -> DataFrame:
        """(id, features[, bias]) of every item fit saw, as ALS's."""
        return self._factors("item")

    # -- persistence -----------------------------------------------------------------------
    def write(self) -> MLWriter:
        return model_writer(self, _save)

    @classmethod
    def read(cls) -> MLReader:
        def build(meta: dict, data: Path, reader) -> "FactorModel":
            users = None
            if (data / "users").exists():
                users = reader.sparkSession.read.parquet(data.resolve().as_uri() + "/users")
            with np.load(data / "rated.npz") as f:
                return cls(cls.LOCAL.load(data / cls.STATE_FILE), f["users"], f["items"],
                           users)
        return model_reader(cls, build)


def _save(m: FactorModel, data: Path) -> None:
    m._state.save(data / m.STATE_FILE)
    with open(data / "rated.npz", "wb") as f:
        np.savez(f, users=m.rated_users, items=m.rated_items)
    if m.users is not None:  # written by the executors
        m.users.write.mode("overwrite").parquet(data.resolve().as_uri() + "/users")


class Predict:
    """mapInArrow: rows with the predicted score (NaN for an id fit did not see) and,
    with `rank` (the rankCol), the item's rank among the user's candidates, the items
    fit saw but the user's training items (`models.spark_evaluation.candidate_ranks`,
    each user of a batch scored once): the rows then carry `_fit_id` (null for a user
    fit did not see) and `_exclude`. `shipped`: FactorModel._shipped's broadcast."""

    def __init__(self, shipped, names: list[str], user: str, item: str, prediction: str,
                 rank: str | None = None) -> None:
        self.shipped, self.names, self.user, self.item = shipped, names, user, item
        self.prediction, self.rank = prediction, rank

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        state, rated_users, rated_items = self.shipped.value
        names = self.names + [self.prediction]
        if self.rank:
            names += [self.rank, candidates_column(self.rank)]
        for batch in batches:
            users, items = arrow.ids(batch.column(self.user)), arrow.ids(batch.column(self.item))
            known = ((users >= 0) & (users < rated_users.size) & (items >= 0)
                     & (items < rated_items.size))
            known[known] &= rated_users[users[known]] & rated_items[items[known]]
            out = np.full(batch.num_rows, np.nan, np.float32)
            if known.any():
                out[known] = state.predict(users[known], items[known])
            arrays = [batch.column(n) for n in self.names] + [pa.array(out)]
            if self.rank:
                arrays += self._ranks(state, rated_items, batch, users, items)
            yield pa.RecordBatch.from_arrays(arrays, names=names)

    @staticmethod
    def _ranks(s: LocalRecommender, rated_items: np.ndarray, batch: pa.RecordBatch,
               users: np.ndarray, items: np.ndarray) -> list[pa.Array]:
        fitted = np.flatnonzero(np.asarray(batch.column("_fit_id").is_valid(), bool))
        distinct, first, inverse = np.unique(users[fitted], return_index=True,
                                             return_inverse=True)
        row_query = np.full(batch.num_rows, -1, np.int64)
        row_query[fitted] = inverse.ravel()
        item_vectors, item_bias = s._item_side()
        exclude = arrow.lists_to_csr(batch.take(pa.array(fitted[first])).column("_exclude"),
                                     item_vectors.shape[0])
        # the user's bias is the same for all of its items: the order needs the rest
        return rank_arrays(*candidate_ranks(
            s._user_side(distinct)[0], item_vectors, item_bias, exclude, row_query, items,
            known=rated_items))

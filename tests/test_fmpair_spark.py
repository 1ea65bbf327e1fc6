"""FMPair through Spark (the pyspark.ml `FMPair` Estimator and `FMPairModel`) on a real
local SparkSession, checked against references computed here: recommendations and
predictions against numpy scoring of the pulled parameters, learning against the local
Python API and popularity, persistence against the model saved, param checks against
the Spark jobs and parameter servers that must not have started, and the parameter
servers of integrated mode against the addresses and processes they had.

One integrated-mode fit (with item features, a sampling attribute and filter items) is
shared by most tests, and one separate-mode fit (with user context features) by the
rest: an integrated fit costs ~15 s here, most of it the shards' grace period after their
master stops, which `fit` waits out."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from pyspark.ml.linalg import SparseVector, Vectors, VectorUDT
from pyspark.ml.recommendation import ALS
from pyspark.sql import types as T

import models.spark_estimator as spark_estimator
from psframework import Client, ConfigError, LocalCluster
from psframework.spark import SparkParameterServer
from models.fmpair import FMPair, FMPairModel, LocalFMPair
from models.metrics import evaluate
from models.synthetic import make_synthetic, popularity_scores
from conftest import FAST, SPARK_SECRET, listening, running, wait_until

SECRET_CONF = {"spark.psframework.secret": SPARK_SECRET,  # as the `spark` fixture's
               "spark.executorEnv.PSF_SECRET": SPARK_SECRET}
N = 10  # recommendations per user
# the same training settings for Spark and for LocalFMPair (whose regularization defaults
# differ from FMPair's)
TRAINING = {"numDims": 16, "loss": "warp", "maxIter": 8, "stepSize": 0.1, "seed": 1,
            "batchSize": 256, "numNegatives": 10, "linearReg": 0.01, "factorsReg": 0.001,
            "optimizer": "adagrad", "numConcurrentBatches": 2}
LOCAL = {"dims": 16, "loss": "warp", "epochs": 8, "step_size": 0.1, "seed": 1,
         "batch_size": 256, "num_negatives": 10, "linear_reg": 0.01, "factors_reg": 0.001,
         "optimizer": "adagrad", "concurrent_batches": 2}
# a value other than the default for every param (checked below to be so)
NON_DEFAULT = {"userCol": "u", "itemCol": "i", "userctxfeaturesCol": "ctx",
               "itemfeaturesCol": "feats", "samplingCol": "artist", "filterItemsCol": "blocked",
               "predictionCol": "score", "sampler": "exp", "loss": "warp", "rho": 0.5,
               "maxIter": 3, "stepSize": 0.05, "seed": 7, "batchSize": 64, "numDims": 8,
               "linearReg": 0.02, "factorsReg": 0.003, "numNegatives": 5,
               "optimizer": "adabatch", "numParameterServers": 2,
               "parameterServerHost": "127.0.0.1:1", "numConcurrentBatches": 3, "replicas": 2,
               "checkpointInterval": 2, "resumeFrom": "/nowhere", "ratingCol": "stars",
               "weightCol": "plays", "threshold": 3.5, "coldStartStrategy": "drop",
               "rankCol": "rank"}


# -- helpers -------------------------------------------------------------------------------
def serve_commands() -> list[list[str]]:
    """The command line of every live `psframework serve` process on this machine."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            words = [w.decode(errors="replace")
                     for w in (d / "cmdline").read_bytes().split(b"\0") if w]
        except OSError:  # not a process, or gone meanwhile
            continue
        if "psframework" in words and "serve" in words and running(int(d.name)):
            found.append(words)
    return found


def collect_recs(df, user: str = "user", item: str = "item") -> dict[int, list[tuple]]:
    return {r[user]: [(x[item], x["rating"]) for x in r["recommendations"]]
            for r in df.collect()}


def assert_top_n(recs: dict[int, list[tuple]], scores: np.ndarray, excluded: sp.spmatrix,
                 users, n: int = N) -> None:
    """Each user's list is numpy's top `n` of `scores[user]` with the user's `excluded`
    items left out, best first: every rating is the score numpy gives its item, and the
    ratings are numpy's top scores in order, so the items are numpy's, in numpy's order;
    only items whose scores tie to float32 rounding may trade places."""
    masked = np.array(scores, np.float64)
    masked[sp.csr_matrix(excluded).nonzero()] = -np.inf
    assert sorted(recs) == sorted(int(u) for u in users)
    for u in users:
        items = np.array([i for i, _ in recs[u]], np.int64)
        ratings = np.array([r for _, r in recs[u]])
        row = masked[u]
        best = np.argsort(-row, kind="stable")[:n]
        best = best[np.isfinite(row[best])]
        tol = 1e-5 * max(1.0, np.abs(row[best]).max())
        assert items.size == best.size == min(n, np.isfinite(row).sum())
        np.testing.assert_allclose(row[items], ratings, rtol=0, atol=tol)  # none excluded
        np.testing.assert_allclose(ratings, row[best], rtol=0, atol=tol)
        gaps = np.abs(row[best][:, None] - row[best][None, :]) + np.eye(best.size) * 1e9
        clear = gaps.min(axis=1) > 4 * tol
        np.testing.assert_array_equal(items[clear], best[clear])


LONG, INT, STRING = T.LongType(), T.IntegerType(), T.StringType()


def frame(session, rows: list, **columns: T.DataType):
    """A DataFrame of `rows` with these columns (a DDL string cannot name Vector)."""
    return session.createDataFrame(rows, T.StructType([T.StructField(name, kind)
                                                       for name, kind in columns.items()]))


@contextlib.contextmanager
def job_group(sc, group: str):
    """Spark jobs this thread starts inside the block belong to `group`."""
    sc.setJobGroup(group, group)
    try:
        yield
    finally:
        for key in ("spark.jobGroup.id", "spark.job.description"):
            sc.setLocalProperty(key, None)


# -- data and fits -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def session(spark_session):
    """The `spark` fixture's session, for module-scoped fixtures."""
    return spark_session("local[4]", SECRET_CONF)


@pytest.fixture(scope="module")
def data():
    """Big enough that learning shows clearly (precision@10 ~3x popularity), small enough
    for a few seconds of training."""
    return make_synthetic(n_users=400, n_items=300, n_artists=30, interactions_per_user=10,
                          seed=3)


@pytest.fixture(scope="module")
def interactions(session, data):
    """One row per training interaction: user, item, the item's artist and its features
    (identity + artist one-hot) as a SparseVector, and 0-2 random items never to
    recommend to the row's user ("blocked", with a null element here and there). Also
    the reference matrices: `features`, as the rows tell them (an item in no row has
    none), and `blocked`, the union of each user's blocked items."""
    rng = np.random.default_rng(7)
    features = data.item_features().tocsr()
    vectors = [SparseVector(features.shape[1], features[i].indices.tolist(),
                            features[i].data.tolist()) for i in range(data.n_items)]
    coo = data.train.tocoo()
    rows, pairs = [], []
    for u, i in zip(coo.row.tolist(), coo.col.tolist()):
        blocked = rng.integers(0, data.n_items, size=rng.integers(0, 3)).tolist()
        pairs += [(u, b) for b in blocked]
        blocked = blocked + [None] * int(rng.random() < 0.05)  # a null element means nothing
        rows.append((u, i, int(data.item_artist[i]), vectors[i], blocked))
    pairs = np.array(pairs).reshape(-1, 2)
    blocked = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                            shape=data.train.shape)
    blocked.data[:] = 1
    seen = sp.diags((data.train.getnnz(axis=0) > 0).astype(np.float32))
    df = frame(session, rows, user=LONG, item=LONG, artist=INT, features=VectorUDT(),
               blocked=T.ArrayType(INT))
    return SimpleNamespace(df=df, features=(seen @ features).tocsr(), blocked=blocked)


@pytest.fixture(scope="module")
def integrated(session, interactions):
    """Fit in integrated mode, recording the master and shards that fit started (as they
    were just before it stopped them)."""
    started = []

    class Recorded(SparkParameterServer):
        def close(self) -> None:
            if self._master_process is not None:
                started.append(SimpleNamespace(master=self.master, shards=list(self.shards),
                                               pid=self._master_process.pid))
            super().close()
    collected = []  # (what, rows) for everything fit brings to the driver

    def recording(cls, method):
        original = getattr(cls, method)

        def wrapper(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            rows = out.num_rows if hasattr(out, "num_rows") else (
                1 if method == "first" and out is not None else len(out or []))
            collected.append((f"{cls.__name__}.{method}", rows))
            return out
        return wrapper
    from pyspark.rdd import RDD
    from pyspark.sql.classic.dataframe import DataFrame
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(spark_estimator, "SparkParameterServer", Recorded)
        for cls, methods in ((DataFrame, ("collect", "toArrow", "toPandas", "take", "first",
                                          "head", "tail", "toLocalIterator")),
                             (RDD, ("collect", "take", "toLocalIterator"))):
            for method in methods:
                mp.setattr(cls, method, recording(cls, method))
        model = FMPair(**TRAINING, numParameterServers=2, itemfeaturesCol="features",
                       samplingCol="artist", filterItemsCol="blocked").fit(interactions.df)
    return SimpleNamespace(model=model, started=started, collected=collected)


@pytest.fixture(scope="module")
def reference(integrated, data, interactions):
    """numpy scores from the pulled parameters, laid out [users | item features]: a user
    is its one-hot id, an item the features given in the DataFrame."""
    state = integrated.model.state
    n_users = data.n_users
    users = state.factors_[:n_users].astype(np.float64)
    items = interactions.features @ state.factors_[n_users:].astype(np.float64)
    bias = interactions.features @ state.linear_[n_users:].astype(np.float64)
    return SimpleNamespace(users=users, items=items, bias=bias,
                           scores=users @ items.T + bias)


# -- 1. recommending and scoring equal numpy -----------------------------------------------
def test_recommend_for_all_users_equals_numpy_top_n_with_als_schema(integrated, reference,
                                                                    data, interactions,
                                                                    session):
    model = integrated.model
    recs = model.recommendForAllUsers(N)
    als = ALS(rank=1, maxIter=1, implicitPrefs=True, seed=0, userCol="user", itemCol="item",
              ratingCol="rating").fit(session.createDataFrame(
                  [(0, 0, 1.0), (0, 1, 1.0), (1, 1, 1.0)], ["user", "item", "rating"]))
    # int ids and float ratings, as ALS's
    assert recs.schema.simpleString() == als.recommendForAllUsers(2).schema.simpleString()
    assert recs.schema["recommendations"].dataType.elementType["rating"].dataType == T.FloatType()
    users = np.flatnonzero(data.train.getnnz(axis=1))
    assert_top_n(collect_recs(recs), reference.scores, data.train + interactions.blocked,
                 users)


def test_spark_recommendations_equal_the_local_ones(integrated, data, interactions):
    """recommendForAllUsers on the executors gives what LocalFMPair.recommend gives on
    the driver with the same parameters and the same items left out: same ids, same
    float32 ratings."""
    model = integrated.model
    users = np.flatnonzero(data.train.getnnz(axis=1))
    ids, scores = model.state.recommend(users, N, filter_seen=False,
                                        exclude=(data.train + interactions.blocked)[users])
    recs = collect_recs(model.recommendForAllUsers(N))
    for row, u in enumerate(users):
        assert [i for i, _ in recs[u]] == ids[row].tolist()
        np.testing.assert_array_equal([r for _, r in recs[u]], scores[row])


def test_scoring_tasks_run_the_drivers_interpreter_in_local_mode(integrated, session,
                                                                 monkeypatch):
    """With neither spark.pyspark.python nor PYSPARK_PYTHON set, pyspark would start its
    workers with whatever `python3` it finds (here one that does not exist): the model's
    Python tasks run the driver's interpreter instead."""
    sc = session.sparkContext
    before = sc.pythonExec
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    try:
        sc.pythonExec = "/nonexistent/python3"
        assert integrated.model.recommendForAllUsers(2).count() > 0
        assert sc.pythonExec == before
    finally:
        sc.pythonExec = before


def test_fit_brings_nothing_per_interaction_to_the_driver(integrated, data, interactions):
    """What fit collected (recorded on every DataFrame and RDD action the driver ran) is
    O(items) per result, and the model on the driver holds nothing per interaction."""
    n_rows = interactions.df.count()
    results = integrated.collected
    assert results and n_rows > 3 * data.n_items  # the bound below is a real one
    assert max(rows for _, rows in results) <= data.n_items, results
    epochs, partitions = TRAINING["maxIter"], 4
    # beside O(items): the epochs' stats, an aggregate row, the shards' start-up job
    assert sum(rows for _, rows in results) <= 3 * data.n_items + epochs * partitions + 20
    state = integrated.model.state
    assert state.train_ is None
    arrays = [state.factors_, state.linear_, state.space_.user.indices, state.space_.item.indices]
    n_features = state.space_.n_features
    assert all(a.shape[0] <= n_features for a in arrays)
    assert state.factors_.shape == (n_features, TRAINING["numDims"])


def test_recommend_for_user_subset_also_leaves_out_the_subsets_filter_items(
        integrated, reference, data, interactions, session):
    excluded = data.train + interactions.blocked
    masked = np.where(excluded.toarray() > 0, -np.inf, reference.scores)
    best = int(np.argmax(masked[3]))  # user 3 is denied the item it would get first
    subset = session.createDataFrame(
        [(3, [best]), (7, []), (7, [5, None, 6]), (42, None),
         (10_000, [1])],  # an unknown user: nothing to recommend
        "user long, blocked array<int>")
    given = sp.csr_matrix((np.ones(3), ([3, 7, 7], [best, 5, 6])), shape=data.train.shape)
    recs = collect_recs(integrated.model.recommendForUserSubset(subset, N))
    assert best not in [i for i, _ in recs[3]]
    assert_top_n(recs, reference.scores, excluded + given, [3, 7, 42])
    # without the column, only what fit saw is left out
    plain = collect_recs(integrated.model.recommendForUserSubset(subset.select("user"),
                                                                 np.int64(3)))
    assert plain[3][0][0] == best
    assert_top_n(plain, reference.scores, excluded, [3, 7, 42], n=3)


def test_transform_adds_numpy_scores_and_nan_for_unknown_ids(integrated, reference, data,
                                                             session):
    last = (data.n_users - 1, data.n_items - 1)
    pairs = [(0, 0), (3, 17), last, (42, 5), (10_000, 1), (1, 10_000)]
    df = session.createDataFrame([(u, i, f"row{k}") for k, (u, i) in enumerate(pairs)],
                                 "user long, item long, tag string")
    out = integrated.model.transform(df)
    assert out.columns == ["user", "item", "tag", "prediction"]
    got = {r.tag: r.prediction for r in out.collect()}
    for k, (u, i) in enumerate(pairs[:4]):
        assert got[f"row{k}"] == pytest.approx(reference.scores[u, i], rel=1e-5, abs=1e-5)
    assert np.isnan(got["row4"]) and np.isnan(got["row5"])


def test_recommend_for_all_items_equals_numpy_top_n_with_als_schema(integrated, reference,
                                                                    data, interactions,
                                                                    session):
    """Each item's top users: numpy's top N of the scores' column, leaving out the users
    that had the item in training or in filterItemsCol; ALS's item-side schema."""
    model = integrated.model
    recs = model.recommendForAllItems(N)
    assert recs.schema.simpleString() == ("struct<item:int,recommendations:array<struct<"
                                          "user:int,rating:float>>>")
    excluded = (data.train + interactions.blocked).T
    scores = np.array(reference.scores.T)
    scores[:, data.train.getnnz(axis=1) == 0] = -np.inf  # users fit never saw
    assert_top_n(collect_recs(recs, "item", "user"), scores, excluded, range(data.n_items))
    subset = session.createDataFrame([(5.0,), (5.0,), (17.0,), (10_000.0,), (None,)],
                                     "item double")
    got = collect_recs(model.recommendForItemSubset(subset, 3), "item", "user")
    assert_top_n(got, scores, excluded, [5, 17], n=3)  # once each; unknown: none


def test_transform_gives_int_ids_and_drops_cold_start_rows_when_asked(integrated, reference,
                                                                      session):
    """As ALS: integral doubles (StringIndexer's) are read as ids and come out as ints;
    coldStartStrategy "drop" drops the rows of unknown ids; a fractional id fails."""
    model = integrated.model
    df = session.createDataFrame([(0.0, 3.0), (2.0, 10_000.0), (10_000.0, 1.0)],
                                 "user double, item double")
    out = model.transform(df)
    assert out.schema.simpleString() == "struct<user:int,item:int,prediction:double>"
    rows = out.collect()
    assert rows[0].prediction == pytest.approx(reference.scores[0, 3], rel=1e-5, abs=1e-5)
    assert [np.isnan(r.prediction) for r in rows] == [False, True, True]
    dropped = model.copy({model.getParam("coldStartStrategy"): "drop"}).transform(df)
    assert [(r.user, r.item) for r in dropped.collect()] == [(0, 3)]
    with pytest.raises(Exception, match="'user' must hold integer ids.*0.5"):
        model.transform(session.createDataFrame([(0.5, 1.0)], "user double, item double")
                        ).collect()


def test_rank_and_history_as_als_and_the_fit_reported(integrated):
    model = integrated.model
    assert model.rank == TRAINING["numDims"] == model.getNumDims()
    assert [h["epoch"] for h in model.history] == list(range(TRAINING["maxIter"]))


def test_user_and_item_factors_are_the_pulled_parameters(integrated, reference):
    users = {r.id: r.features for r in integrated.model.userFactors.collect()}
    items = {r.id: (r.features, r.bias) for r in integrated.model.itemFactors.collect()}
    assert sorted(users) == list(range(len(reference.users)))
    assert sorted(items) == list(range(len(reference.items)))
    np.testing.assert_allclose([users[u] for u in sorted(users)], reference.users, rtol=1e-6)
    np.testing.assert_allclose([items[i][0] for i in sorted(items)], reference.items,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([items[i][1] for i in sorted(items)], reference.bias,
                               rtol=1e-5, atol=1e-7)


# -- 2. separate mode, with user context features ------------------------------------------
@pytest.fixture(scope="module")
def separate(session):
    """A fit on a running cluster (separate mode) with a user context column: each row
    carries its user's latent cluster, one-hot, as context (a "user feature" that the
    model can only know through the context)."""
    small = make_synthetic(n_users=120, n_items=90, n_clusters=6, n_artists=12,
                           interactions_per_user=6, seed=4)
    coo = small.train.tocoo()
    clusters = 6
    rows = [(u, i, Vectors.sparse(clusters, [int(small.user_cluster[u])], [1.0]))
            for u, i in zip(coo.row.tolist(), coo.col.tolist())]
    df = frame(session, rows, user=LONG, item=LONG, ctx=VectorUDT())
    cluster = LocalCluster(shards=2, secret=SPARK_SECRET, **FAST).start()
    try:
        model = FMPair(numDims=8, maxIter=2, stepSize=0.1, seed=2, userctxfeaturesCol="ctx",
                       parameterServerHost=cluster.address).fit(df)
        yield SimpleNamespace(model=model, cluster=cluster, data=small, clusters=clusters)
    finally:
        cluster.stop()


def test_separate_mode_keeps_the_model_on_the_running_cluster_until_destroy(separate,
                                                                            tmp_path):
    model, cluster = separate.model, separate.cluster
    assert model.ps_master == cluster.address and model.ps_model
    assert cluster.master_process.poll() is None
    assert all(p.poll() is None for p in cluster.shard_processes)
    with Client(cluster.address, secret=SPARK_SECRET) as c:
        assert sum(s["alive"] for s in c.status()["servers"]) == 2
        assert model.ps_model in [m["name"] for m in c.status()["models"]]
        every = np.arange(model.state.factors_.shape[0])  # the model's parameters are there
        np.testing.assert_array_equal(c.pull_rows(model.ps_model, "factors", every),
                                      model.state.factors_)
        name = model.ps_model
        assert model.destroy() is True
        assert name not in [m["name"] for m in c.status()["models"]]
        assert sum(s["alive"] for s in c.status()["servers"]) == 2  # the cluster runs on
    assert model.destroy() is False and model.ps_model is None

    # with the cluster stopped, a saved model still recommends as before
    before = collect_recs(model.recommendForAllUsers(N))
    cluster.stop()
    assert not listening(model.ps_master)
    model.save(str(tmp_path / "separate"))
    loaded = FMPairModel.load(str(tmp_path / "separate"))
    assert collect_recs(loaded.recommendForAllUsers(N)) == before
    assert loaded.getUserctxfeaturesCol() == "ctx"


def test_user_context_features_fit_and_recommend_from_the_context(separate, session):
    """Layout [context | items]: a user's representation is its context's factors."""
    model, small, k = separate.model, separate.data, separate.clusters
    v, w = model.state.factors_.astype(np.float64), model.state.linear_.astype(np.float64)
    assert v.shape == (k + small.n_items, 8) and w.shape == (k + small.n_items,)
    items, bias = v[k:], w[k:]
    own = np.eye(k)[small.user_cluster] @ v[:k]
    users = np.flatnonzero(small.train.getnnz(axis=1))

    recs = collect_recs(model.recommendForAllUsers(N))
    assert all(len(r) == N for r in recs.values())
    assert_top_n(recs, own @ items.T + bias, small.train, users)
    factors = {r.id: r.features for r in model.userFactors.collect()}
    np.testing.assert_allclose([factors[u] for u in range(small.n_users)], own, rtol=1e-5,
                               atol=1e-7)

    # a context given with the users replaces the one fit saw
    other = (small.user_cluster + 1) % k
    subset = frame(session, [(int(u), Vectors.sparse(k, [int(other[u])], [1.0]))
                             for u in users[:20]], user=LONG, ctx=VectorUDT())
    shifted = np.eye(k)[other] @ v[:k]
    assert_top_n(collect_recs(model.recommendForUserSubset(subset, N)),
                 shifted @ items.T + bias, small.train, users[:20])
    scored = model.transform(frame(
        session, [(int(users[0]), 4, Vectors.sparse(k, [int(other[users[0]])], [1.0]))],
        user=LONG, item=LONG, ctx=VectorUDT())).first().prediction
    assert scored == pytest.approx(shifted[users[0]] @ items[4] + bias[4], rel=1e-5)


# -- 3. persistence --------------------------------------------------------------------------
def test_saved_model_recommends_the_same_without_any_parameter_server(integrated, tmp_path):
    model = integrated.model
    assert integrated.started and not any(listening(s.master) for s in integrated.started)
    model.save(str(tmp_path / "model"))
    loaded = FMPairModel.load(str(tmp_path / "model"))
    assert loaded.uid == model.uid and loaded.history == model.history
    assert (collect_recs(loaded.recommendForAllUsers(N))
            == collect_recs(model.recommendForAllUsers(N)))
    np.testing.assert_array_equal(loaded.state.factors_, model.state.factors_)
    np.testing.assert_array_equal(loaded.state.linear_, model.state.linear_)
    def left_out(m):
        return {r.id: sorted(r.exclude) for r in m.users.collect()}
    assert left_out(loaded) == left_out(model)



def test_models_saved_before_the_model_moved_to_spark_model_still_load(integrated, session,
                                                                       tmp_path):
    """pyspark.ml's metadata names the class by its dotted path, which loaders of
    pipelines (DefaultParamsReader.loadParamsInstance) import: FMPairModel lived in
    models.fmpair.estimator until it moved to models.fmpair.spark_model."""
    import json
    from pyspark.ml.util import DefaultParamsReader
    path = tmp_path / "model"
    integrated.model.save(str(path))
    [part] = (path / "metadata").glob("part-*")
    meta = json.loads(part.read_text())
    assert meta["class"] == "models.fmpair.spark_model.FMPairModel"
    meta["class"] = "models.fmpair.estimator.FMPairModel"  # as saved before the move
    part.write_text(json.dumps(meta) + "\n")
    for crc in (path / "metadata").glob(".*.crc"):  # Hadoop would check the old checksum
        crc.unlink()
    loaded = DefaultParamsReader.loadParamsInstance(str(path), session)
    assert type(loaded) is FMPairModel and loaded.uid == integrated.model.uid
    np.testing.assert_array_equal(loaded.state.factors_, integrated.model.state.factors_)

def test_every_param_round_trips_through_persistence(integrated, tmp_path):
    params = [p.name for p in FMPair().params]
    assert sorted(NON_DEFAULT) == sorted(params)
    default = FMPair()
    for name, value in NON_DEFAULT.items():
        param = default.getParam(name)
        assert not default.isDefined(param) or default.getOrDefault(param) != value, name

    fmpair = FMPair(**NON_DEFAULT)
    fmpair.save(str(tmp_path / "estimator"))
    again = FMPair.load(str(tmp_path / "estimator"))
    assert type(again) is FMPair and again.uid == fmpair.uid
    assert again.extractParamMap() == fmpair.extractParamMap()
    for name, value in NON_DEFAULT.items():
        assert getattr(again, f"get{name[0].upper()}{name[1:]}")() == value, name

    model = integrated.model.copy({integrated.model.getParam(k): v
                                   for k, v in NON_DEFAULT.items()})
    model.save(str(tmp_path / "model"))
    loaded = FMPairModel.load(str(tmp_path / "model"))
    assert type(loaded) is FMPairModel and loaded.uid == model.uid
    assert loaded.extractParamMap() == model.extractParamMap()
    for name, value in NON_DEFAULT.items():
        assert getattr(loaded, f"get{name[0].upper()}{name[1:]}")() == value, name


# -- 4. bad params and columns fail before anything starts ---------------------------------
@pytest.fixture(scope="module")
def odd_frame(session):
    """Right and wrong columns side by side."""
    return frame(session,
                 [(0, 1, "ann", [0.5, 1.0], Vectors.dense([0.5, 1.0]), "abba", ["x"], [1]),
                  (1, 0, "bob", [1.0, 0.0], Vectors.dense([1.0, 0.0]), "acdc", ["y"], [0])],
                 user=LONG, item=INT, name=STRING, dense=T.ArrayType(T.DoubleType()),
                 features=VectorUDT(), band=STRING, tags=T.ArrayType(STRING),
                 blocked=T.ArrayType(INT))


@pytest.fixture
def no_server(monkeypatch):
    """Fails the test if FMPair.fit gets as far as making a SparkParameterServer."""
    def refuse(*args, **kwargs):
        pytest.fail("FMPair.fit started a parameter server")
    monkeypatch.setattr(spark_estimator, "SparkParameterServer", refuse)


@pytest.mark.parametrize("bad, names", [
    ({"numDims": 0}, ["numDims", "positive integer"]),
    ({"loss": "hinge"}, ["loss", "'hinge'"]),
    ({"sampler": "x"}, ["sampler", "'x'"]),
    ({"optimizer": "adam"}, ["optimizer"]),
    ({"stepSize": 0.0}, ["stepSize", "> 0"]),
    ({"linearReg": -0.1}, ["linearReg", ">= 0"]),
    ({"numParameterServers": 0}, ["numParameterServers"]),
    ({"parameterServerHost": "127.0.0.1:http"}, ["parameterServerHost", "HOST:PORT"]),
    ({"itemCol": "song"}, ["itemCol", "'song'", "not in the DataFrame"]),
    ({"userCol": "name"}, ["userCol", "'name'", "integer", "string"]),
    ({"itemfeaturesCol": "dense"}, ["itemfeaturesCol", "'dense'", "Vector"]),
    ({"userctxfeaturesCol": "name"}, ["userctxfeaturesCol", "'name'", "Vector"]),
    ({"samplingCol": "band"}, ["samplingCol", "'band'", "integer"]),
    ({"filterItemsCol": "tags"}, ["filterItemsCol", "'tags'", "array<integer>"]),
    ({"ratingCol": "band"}, ["ratingCol", "'band'", "numbers"]),
    ({"weightCol": "tags"}, ["weightCol", "'tags'", "numbers"]),
    ({"threshold": 2.0}, ["threshold needs ratingCol"]),
    ({"coldStartStrategy": "zero"}, ["coldStartStrategy", "'zero'"]),
])
def test_bad_params_and_columns_fail_before_any_job_or_server(spark, odd_frame, no_server,
                                                            bad, names):
    sc = spark.sparkContext
    group = f"fmpair-bad-{'-'.join(bad)}"
    with job_group(sc, group), pytest.raises(ConfigError) as e:
        FMPair(**{"numParameterServers": 2, **bad}).fit(odd_frame)
    assert all(n in str(e.value) for n in names), str(e.value)
    assert sc.statusTracker().getJobIdsForGroup(group) == []  # no Spark job ran


@pytest.mark.parametrize("rows, hint", [
    ([], "no rows"),
    ([(0, 1), (None, 2)], "'user'.*nulls"),
    ([(0, 1), (1, -3)], "'item'.*>= 0"),
    ([(0.0, 1.0), (1.5, 2.0)], "'user'.*integers.*1.5.*StringIndexer"),
    ([(0.0, 1.0), (1.0, float("nan"))], "'item'.*integers.*nan"),
    ([(0.0, 1.0), (1.0, 2.0**31)], "'item'.*< 2\\^31"),
])
def test_bad_interactions_fail_before_any_server_starts(spark, no_server, rows, hint):
    kind = T.DoubleType() if rows and isinstance(rows[0][0], float) else LONG
    with pytest.raises(ConfigError, match=hint):
        FMPair(numParameterServers=2).fit(frame(spark, rows, user=kind, item=kind))


def test_bad_weights_fail_before_any_server_starts(spark, no_server):
    df = frame(spark, [(0, 1, 2.0), (1, 0, 0.0)], user=LONG, item=LONG, w=T.DoubleType())
    with pytest.raises(ConfigError, match="weightCol.*'w'.*> 0.*0.0"):
        FMPair(numParameterServers=2, weightCol="w").fit(df)


def test_the_job_check_above_sees_jobs(spark, odd_frame):
    """The control for the test above: a job run in a group is seen in it."""
    sc = spark.sparkContext
    with job_group(sc, "fmpair-control"):
        assert odd_frame.count() == 2
    assert sc.statusTracker().getJobIdsForGroup("fmpair-control") != []


def test_scoring_checks_its_input_too(integrated, odd_frame):
    model = integrated.model
    for bad in (0, True, 2.5):
        with pytest.raises(ConfigError, match="numItems"):
            model.recommendForAllUsers(bad)
    with pytest.raises(ConfigError, match="userCol.*'name'.*integer"):
        model.copy({model.getParam("userCol"): "name"}).recommendForUserSubset(odd_frame, 3)
    with pytest.raises(ConfigError, match="item column 'song'"):
        model.copy({model.getParam("itemCol"): "song"}).transform(odd_frame)


# -- 5. integrated mode leaves no servers behind ----------------------------------------------
def test_integrated_fit_stops_its_master_and_shards(integrated):
    assert len(integrated.started) == 1
    run = integrated.started[0]
    assert len(run.shards) == 2 and all(s.address for s in run.shards)
    assert not listening(run.master)
    assert not any(listening(s.address) for s in run.shards)
    wait_until(lambda: not running(run.pid) and not any(running(s.pid) for s in run.shards),
               timeout=10)
    assert not [cmd for cmd in serve_commands() if run.master in cmd]  # `--master ADDR`
    assert integrated.model.ps_master is None and integrated.model.destroy() is False


# -- 6. learning ------------------------------------------------------------------------------
def test_learning_through_spark_matches_the_local_api(integrated, data, interactions):
    """The same data, item features (as the rows tell them), sampling attribute, settings
    and seed through LocalFMPair. Spark trains 4 partitions asynchronously, so the runs
    are not bit-identical: their precision@10 must agree within 30% of LocalFMPair's,
    and both must beat popularity by far (here: ~0.10 against ~0.03)."""
    local = LocalFMPair(**LOCAL, num_shards=2).fit(
        data.train, item_features=interactions.features, sampling_attribute=data.item_artist)
    results = {}
    for name, model in (("spark", integrated.model.state), ("local", local)):
        vectors, bias = model.item_representations()
        results[name] = evaluate(lambda u: model.user_representations(u) @ vectors.T + bias,
                                 data.test, train=data.train)
    pop = evaluate(popularity_scores(data.train), data.test, train=data.train)
    p_spark, p_local = results["spark"]["precision@10"], results["local"]["precision@10"]
    assert p_spark > 2 * pop["precision@10"] and p_local > 2 * pop["precision@10"]
    assert results["spark"]["auc"] > pop["auc"] + 0.1
    assert abs(p_spark - p_local) <= 0.3 * p_local, results
    history = integrated.model.history
    assert len(history) == TRAINING["maxIter"]
    assert all(h["pairs"] == data.train.nnz for h in history)
    assert history[-1]["loss"] < history[0]["loss"]


# -- 7. side columns ---------------------------------------------------------------------------
def test_side_columns_shape_the_model_and_the_recommendations(integrated, reference, data,
                                                              interactions):
    model = integrated.model
    # the item features given are the model's item side: [users | identity | artists]
    assert model.state.factors_.shape == (data.n_users + data.n_items + data.n_artists,
                                          TRAINING["numDims"])
    assert (model.state.space_.item != interactions.features).nnz == 0
    recs = collect_recs(model.recommendForAllUsers(N))
    train, blocked = data.train.tolil().rows, interactions.blocked.tolil().rows
    for u, items in recs.items():
        got = {i for i, _ in items}
        assert len(got) == N and not got & set(train[u]) and not got & set(blocked[u])
    # the filter matters: without it, blocked items would be among some users' top N
    unfiltered = np.array(reference.scores)
    unfiltered[data.train.nonzero()] = -np.inf
    top = np.argsort(-unfiltered, axis=1)[:, :N]
    assert sum(bool(set(top[u]) & set(blocked[u])) for u in recs) > 10

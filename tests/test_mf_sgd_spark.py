"""MFSGD through Spark (the pyspark.ml `MFSGD` Estimator and `MFSGDModel`) on the real
local SparkSession: its predictions and all four recommendation frames against numpy
scoring of the factors it holds, learning against the global-mean baseline and the noise,
persistence against the model saved, tuning with pyspark.ml's CrossValidator, and bad
params and columns refused before any job runs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

from psframework import ConfigError, LocalCluster
from models.mf_sgd import MFSGD, MFSGDModel
from conftest import FAST, SPARK_SECRET

SECRET_CONF = {"spark.psframework.secret": SPARK_SECRET,
               "spark.executorEnv.PSF_SECRET": SPARK_SECRET}
SIGMA = 0.3


@pytest.fixture(scope="module")
def session(spark_session):
    return spark_session("local[4]", SECRET_CONF)


@pytest.fixture(scope="module")
def data():
    """Low-rank ratings plus noise; user 299 and item 199 are only in the test set."""
    rng = np.random.default_rng(5)
    n_users, n_items = 300, 200
    U, V = rng.normal(0, 0.5, (n_users, 4)), rng.normal(0, 0.5, (n_items, 4))
    users = np.repeat(np.arange(n_users), 50)
    items = np.concatenate([rng.choice(n_items, 50, replace=False) for _ in range(n_users)])
    ratings = 3 + (U[users] * V[items]).sum(1) + rng.normal(0, SIGMA, users.size)
    test = (rng.random(users.size) < 0.1) | (users == n_users - 1) | (items == n_items - 1)
    return SimpleNamespace(users=users, items=items, ratings=ratings, test=test)


def frame(session, users, items, ratings, id_type=np.float64, **more):
    """Ids as doubles, as StringIndexer leaves them."""
    return session.createDataFrame(pa.table({"user": users.astype(id_type),
                                             "item": items.astype(id_type),
                                             "rating": ratings, **more}))


@pytest.fixture(scope="module")
def fitted(session, data):
    """Trained on the rows not in the test set; the test rows ride along in the same
    DataFrame, marked by validationIndicatorCol."""
    df = frame(session, data.users, data.items, data.ratings, held_out=data.test)
    model = MFSGD(rank=6, maxIter=20, stepSize=0.02, regParam=0.02, seed=3,
                  validationIndicatorCol="held_out", numParameterServers=2).fit(df)
    return SimpleNamespace(model=model, train=~data.test)


def numpy_scores(model):
    s = model.state
    return (s.global_mean_ + s.user_bias_[:, None].astype(np.float64)
            + s.item_bias_[None, :] + s.user_factors_.astype(np.float64) @ s.item_factors_.T)


def test_fit_learns_and_reports_every_epoch(fitted, data, session):
    model = fitted.model
    assert [h["epoch"] for h in model.history] == list(range(20))
    assert all(h["updates"] == fitted.train.sum() for h in model.history)
    assert model.history[-1]["train_rmse"] < model.history[0]["train_rmse"]
    train = fitted.train
    known = (data.users != 299) & (data.items != 199) & data.test
    rmse = np.sqrt(np.mean((numpy_scores(model)[data.users[known], data.items[known]]
                            - data.ratings[known]) ** 2))
    baseline = np.sqrt(np.mean((data.ratings[train].mean() - data.ratings[known]) ** 2))
    assert rmse < 0.75 * baseline and rmse < 2 * SIGMA
    # the validation RMSE of the last epoch is that of the model on the test rows it can
    # score (user and item rated in training), and only the training rows were trained
    assert model.history[-1]["valid_rmse"] == pytest.approx(rmse, rel=1e-4)
    assert all(h["valid_rmse"] is not None for h in model.history)
    assert model.state.global_mean_ == pytest.approx(data.ratings[train].mean(), rel=1e-6)
    # the train RMSE the last epoch reported is that of the factors the model holds
    fit_rmse = np.sqrt(np.mean((numpy_scores(model)[data.users[train], data.items[train]]
                                - data.ratings[train]) ** 2))
    assert model.history[-1]["train_rmse"] == pytest.approx(fit_rmse, rel=1e-4)


def test_transform_equals_numpy_and_cold_start(fitted, data, session):
    model = fitted.model
    pairs = [(0, 0), (5, 17), (298, 198), (299, 3), (4, 199), (10_000, 1)]
    df = session.createDataFrame([(u, i, k) for k, (u, i) in enumerate(pairs)],
                                 "user long, item long, row long")
    out = model.transform(df)
    assert out.schema["user"].dataType.simpleString() == "int"  # as ALS's transform
    got = {r.row: r.prediction for r in out.collect()}
    scores = numpy_scores(model)
    for k, (u, i) in enumerate(pairs[:3]):
        assert got[k] == pytest.approx(scores[u, i], rel=1e-5, abs=1e-5)
    assert all(np.isnan(got[k]) for k in (3, 4, 5))  # never rated: cold start
    dropped = model.copy({model.getParam("coldStartStrategy"): "drop"}).transform(df)
    assert sorted(r.row for r in dropped.collect()) == [0, 1, 2]


def top(scores, n):
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    return order, np.take_along_axis(scores, order, axis=1)


def test_recommendations_equal_numpy_top_n_with_als_schema(fitted, data):
    model = fitted.model
    scores = numpy_scores(model)
    rated_users = np.unique(data.users[fitted.train])
    rated_items = np.unique(data.items[fitted.train])
    masked = np.full_like(scores, -np.inf)
    masked[np.ix_(rated_users, rated_items)] = scores[np.ix_(rated_users, rated_items)]
    for frame_, side, n in ((model.recommendForAllUsers(5), "user", 5),
                            (model.recommendForAllItems(4), "item", 4)):
        key, other = ("user", "item") if side == "user" else ("item", "user")
        assert frame_.schema.simpleString() == (  # ALS's, int ids
            f"struct<{key}:int,recommendations:array<struct<{other}:int,rating:float>>>")
        got = {r[key]: r.recommendations for r in frame_.collect()}
        rows = masked if side == "user" else masked.T
        ids = rated_users if side == "user" else rated_items
        assert sorted(got) == ids.tolist()
        want_ids, want = top(rows[ids], n)
        for row, x in enumerate(ids):
            np.testing.assert_allclose([r.rating for r in got[x]], want[row], atol=1e-4)
            np.testing.assert_allclose(rows[x, [r[other] for r in got[x]]], want[row], atol=1e-4)


def test_subsets_recommend_for_the_ids_given(fitted, session):
    model = fitted.model
    users = session.createDataFrame([(3.0,), (3.0,), (7.0,), (299.0,)], "user double")
    got = {r.user: len(r.recommendations) for r in model.recommendForUserSubset(users, 3)
           .collect()}
    assert got == {3: 3, 7: 3}  # once each; user 299 was never rated: no row, as ALS
    items = session.createDataFrame([(1,), (2,)], "item long")
    assert sorted(r.item for r in model.recommendForItemSubset(items, 2).collect()) == [1, 2]


def test_save_and_load_predict_the_same(fitted, data, session, tmp_path):
    model = fitted.model
    model.save(str(tmp_path / "m"))
    loaded = MFSGDModel.load(str(tmp_path / "m"))
    test = frame(session, data.users[data.test], data.items[data.test],
                 data.ratings[data.test], np.int64)
    def rows(m):  # NaN (cold start) as None, so that equal rows compare equal
        return sorted(tuple(None if x != x else x for x in r)
                      for r in m.transform(test).collect())
    assert rows(loaded) == rows(model) and loaded.history == model.history
    assert loaded.rank == model.rank == loaded.getRank() == 6 and loaded.uid == model.uid


def test_cross_validator_tunes_reg_param_with_regression_evaluator(session, data):
    """Separate mode (a running cluster) keeps each of CrossValidator's fits short."""
    train = ~data.test
    df = frame(session, data.users[train], data.items[train], data.ratings[train])
    with LocalCluster(shards=2, secret=SPARK_SECRET, **FAST) as cluster:
        mf = MFSGD(rank=4, maxIter=30, stepSize=0.02, parameterServerHost=cluster.address,
                   coldStartStrategy="drop")
        grid = ParamGridBuilder().addGrid(mf.regParam, [0.02, 5.0]).build()
        cv = CrossValidator(estimator=mf, estimatorParamMaps=grid, numFolds=3, seed=1,
                            evaluator=RegressionEvaluator(labelCol="rating"))
        best = cv.fit(df)
    assert best.avgMetrics[0] < best.avgMetrics[1]  # a huge L2 weight cannot fit the data
    assert best.bestModel.getRegParam() == 0.02


def test_decay_shrinks_later_epochs_steps(session, data):
    """With decay 1e-6 every epoch after the first barely moves the factors: five epochs
    end where one epoch (without decay) ends; with decay 1 they do not."""
    train = ~data.test
    df = frame(session, data.users[train], data.items[train], data.ratings[train]).persist()
    with LocalCluster(shards=2, secret=SPARK_SECRET, **FAST) as cluster:
        def fit(**kw):
            return MFSGD(rank=4, stepSize=0.02, seed=2, parameterServerHost=cluster.address,
                         **kw).fit(df).state
        one, decayed, plain = fit(maxIter=1), fit(maxIter=5, decay=1e-6), fit(maxIter=5)
    df.unpersist()
    np.testing.assert_allclose(decayed.item_factors_, one.item_factors_, atol=1e-4)
    np.testing.assert_allclose(decayed.user_factors_, one.user_factors_, atol=1e-4)
    assert np.abs(plain.item_factors_ - one.item_factors_).max() > 1e-2


@pytest.mark.parametrize("bad, match", [
    ({"rank": 0}, "rank"), ({"schedule": "nope"}, "schedule"), ({"stepSize": -1}, "stepSize"),
    ({"decay": 0.0}, "decay"),
    ({"coldStartStrategy": "zero"}, "coldStartStrategy"), ({"ratingCol": "score"}, "score"),
    ({"validationIndicatorCol": "rating"}, "boolean"),
    ({"parameterServerHost": "nowhere"}, "parameterServerHost")])
def test_bad_params_and_columns_are_refused_before_any_job(session, bad, match):
    df = session.createDataFrame([(0, 0, 1.0)], "user long, item long, rating double")
    tracker = session.sparkContext.statusTracker()
    before = len(tracker.getJobIdsForGroup(None))
    with pytest.raises(ConfigError, match=match):
        MFSGD(**bad).fit(df)
    assert len(tracker.getJobIdsForGroup(None)) == before


def test_bad_ids_are_refused(session):
    for rows, match in (([(0.5, 0.0, 1.0)], "integers"), ([(-1.0, 0.0, 1.0)], ">= 0"),
                        ([(0.0, None, 1.0)], "nulls")):
        df = session.createDataFrame(rows, "user double, item double, rating double")
        with pytest.raises(ConfigError, match=match):
            MFSGD(numParameterServers=1).fit(df)

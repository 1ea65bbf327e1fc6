"""The estimators as a pyspark.ml user meets them, on the real local SparkSession: a
Pipeline of StringIndexers and FMPair that fits, saves, loads and recommends the same
with int ids (as ALS); which rows FMPair trains on (ratingCol, threshold) and what each
weighs (weightCol), against fits on the rows a reference keeps and against the training
matrix numpy builds; and the epoch lines a fit prints by default.

Fits run on a running cluster (separate mode), which spares each fit the shards' start
and stop. The fits compared for equality train users that all land in one partition of
fit's repartition by user, with one batch in flight and two shards: one task trains
them all, so a fit is deterministic."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import StringIndexer
from pyspark.sql import functions as F

from psframework.spark.progress import visible
from psframework import ConfigError
from models.fmpair import FMPair, FMPairModel
from models.mf_sgd import MFSGDModel
from models.pa import PassiveAggressiveModel
from models.fmpair.spark_job import positives_matrix

SMALL = {"numDims": 8, "maxIter": 2, "stepSize": 0.1, "seed": 3, "batchSize": 32,
         "numConcurrentBatches": 1}


def collect(df, key: str, other: str) -> dict:
    return {r[key]: [(x[other], x.rating) for x in r.recommendations] for r in df.collect()}


# -- the StringIndexer pipeline ------------------------------------------------------------
def test_string_ids_through_string_indexers_fit_save_load_and_recommend(
        secret_spark, secret_cluster, tmp_path):
    rng = np.random.default_rng(1)
    users = [f"u{k}" for k in rng.integers(0, 40, 400)]
    items = [f"song-{k}" for k in rng.integers(0, 30, 400)]
    df = secret_spark.createDataFrame(pa.table({"user_str": users, "item_str": items}))
    pipeline = Pipeline(stages=[
        StringIndexer(inputCol="user_str", outputCol="user"),
        StringIndexer(inputCol="item_str", outputCol="item"),
        FMPair(**SMALL, parameterServerHost=secret_cluster.address)])
    fitted = pipeline.fit(df)
    fmpair = fitted.stages[-1]
    recs = fmpair.recommendForAllUsers(5)
    assert recs.schema.simpleString() == ("struct<user:int,recommendations:array<struct<"
                                          "item:int,rating:float>>>")
    before = collect(recs, "user", "item")
    assert len(before) == len(set(users)) and all(len(r) == 5 for r in before.values())
    # the whole pipeline scores string ids: the indexers' doubles come out as ints
    scored = fitted.transform(df.limit(5))
    assert scored.schema["user"].dataType.simpleString() == "int"
    assert scored.where(F.isnan("prediction")).count() == 0

    fitted.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    assert collect(loaded.stages[-1].recommendForAllUsers(5), "user", "item") == before
    assert loaded.stages[-1].history == fmpair.history and len(fmpair.history) == 2
    assert (sorted(loaded.transform(df.limit(5)).collect())
            == sorted(scored.collect()))
    # string ids back: the user indexer's labels name the users recommended for
    labels = fitted.stages[0].labels
    assert {labels[u] for u in before} == set(users)


# -- which rows are positives, and their weights -------------------------------------------
@pytest.fixture(scope="module")
def one_partition_users(secret_spark):
    """Users that fit's repartition by user (into defaultParallelism partitions) puts in
    one partition, so that one task trains them all."""
    parts = secret_spark.sparkContext.defaultParallelism
    rows = secret_spark.range(400).where(F.expr(f"pmod(hash(id), {parts}) = 0")).collect()
    return np.array([r.id for r in rows][:60])


@pytest.fixture(scope="module")
def rated(secret_spark, one_partition_users):
    """(user, item, rating 1-5, plays) rows, each (user, item) once."""
    rng = np.random.default_rng(2)
    users = np.repeat(one_partition_users, 8)
    items = np.concatenate([rng.choice(50, 8, replace=False) for _ in one_partition_users])
    return pa.table({"user": users, "item": items,
                     "rating": rng.integers(1, 6, users.size).astype(np.float64),
                     "plays": rng.integers(1, 4, users.size).astype(np.float64)})


def fit(secret_spark, secret_cluster, table: pa.Table, **params):
    return FMPair(**SMALL, parameterServerHost=secret_cluster.address, **params).fit(
        secret_spark.createDataFrame(table))


def test_rows_below_the_threshold_are_not_trained_on(secret_spark, secret_cluster, rated):
    """ratingCol + threshold 3 trains exactly what a fit on the rows rated >= 3 trains;
    without threshold, rating > 0 is the rule (here: every row)."""
    kept = rated.filter(pc.greater_equal(rated.column("rating"), 3.0))
    assert 0 < kept.num_rows < rated.num_rows
    reference = fit(secret_spark, secret_cluster, kept.drop(["rating"]))
    chosen = fit(secret_spark, secret_cluster, rated, ratingCol="rating", threshold=3.0)
    np.testing.assert_array_equal(chosen.state.factors_, reference.state.factors_)
    np.testing.assert_array_equal(chosen.state.linear_, reference.state.linear_)
    assert [h["pairs"] for h in chosen.history] == [kept.num_rows] * 2
    # the items left out of recommendations are the positives' only
    assert ({r.id: sorted(r.exclude) for r in chosen.users.collect()}
            == {r.id: sorted(r.exclude) for r in reference.users.collect()})
    everything = fit(secret_spark, secret_cluster, rated, ratingCol="rating")
    assert [h["pairs"] for h in everything.history] == [rated.num_rows] * 2


def test_weights_reach_the_loss(secret_spark, secret_cluster, rated):
    """Weights of 1 train what no weights train; other weights train something else."""
    plain = fit(secret_spark, secret_cluster, rated)
    ones = rated.set_column(3, "plays", pa.array(np.ones(rated.num_rows)))
    unit = fit(secret_spark, secret_cluster, ones, weightCol="plays")
    np.testing.assert_array_equal(unit.state.factors_, plain.state.factors_)
    weighted = fit(secret_spark, secret_cluster, rated, weightCol="plays")
    assert np.abs(weighted.state.factors_ - plain.state.factors_).max() > 1e-3


def test_the_training_matrix_holds_each_positives_summed_weight():
    """What a training task hands the Trainer, against numpy: duplicates are one
    positive, weighing the sum of their rows' weights (1 each without weights), and
    `first` points at each positive's first row in row-major order."""
    users = np.array([2, 0, 2, 1, 0, 2])
    items = np.array([1, 3, 1, 0, 3, 2])
    weights = np.array([0.5, 2.0, 1.5, 1.0, 3.0, 4.0])
    train, first = positives_matrix(users, items, weights, 3, 4)
    want = np.zeros((3, 4))
    np.add.at(want, (users, items), weights)
    np.testing.assert_array_equal(train.toarray(), want)
    assert train.nnz == 4
    np.testing.assert_array_equal(users[first] * 4 + items[first], [3, 4, 9, 10])
    np.testing.assert_array_equal(first, [1, 3, 0, 5])
    plain, _ = positives_matrix(users, items, None, 3, 4)
    np.testing.assert_array_equal(plain.toarray(), want > 0)


# -- the epoch lines a fit prints ----------------------------------------------------------
@contextlib.contextmanager
def unconfigured_logging(name: str):
    """Logging as a script that never configured it has it: no handler on the root (pytest
    puts its own there while a test runs; they come back after), and the model's logger
    as it was before."""
    root, logger = logging.getLogger(), logging.getLogger(name)
    saved, before = root.handlers[:], (logger.handlers[:], logger.level)
    for h in saved:
        root.removeHandler(h)
    try:
        yield
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        logger.handlers[:] = before[0]
        logger.setLevel(before[1])


def test_a_fit_prints_one_line_per_epoch_to_stderr_by_default(secret_spark, secret_cluster, rated,
                                                              capsys):
    with unconfigured_logging("models.fmpair"):
        fit(secret_spark, secret_cluster, rated)
        printed = capsys.readouterr().err
        # once the application configures logging, its configuration decides
        logging.getLogger().addHandler(logging.NullHandler())
        fit(secret_spark, secret_cluster, rated)
        assert "FMPair epoch" not in capsys.readouterr().err
    lines = [line for line in printed.splitlines() if "FMPair epoch" in line]
    assert len(lines) == 2, lines
    assert "FMPair epoch 1/2: loss" in lines[0] and lines[1].endswith("pairs/s")


def test_visible_leaves_configured_logging_alone():
    logger = logging.getLogger("psframework-test-visible")
    assert logging.getLogger().handlers  # pytest's: logging is configured
    visible(logger)
    assert not logger.handlers and logger.level == logging.NOTSET


# -- fitted models built empty -------------------------------------------------------------
@pytest.mark.parametrize("make, ask, said", [
    (FMPairModel, lambda m: m.rank,
     "this FMPairModel holds no parameters: FMPair.fit or FMPairModel.load makes one"),
    (MFSGDModel, lambda m: m.rank,
     "this MFSGDModel holds no parameters: MFSGD.fit or MFSGDModel.load makes one"),
    (PassiveAggressiveModel, lambda m: m.coefficients,
     "this PassiveAggressiveModel holds no layout: "
     "PassiveAggressive.fit or PassiveAggressiveModel.load makes one"),
])
def test_a_model_built_empty_says_what_makes_one(make, ask, said):
    """pyspark.ml builds models with no arguments (e.g. to copy them): asking one for what
    only fit or load gives it is a ConfigError saying so, not an AttributeError on None."""
    with pytest.raises(ConfigError) as e:
        ask(make())
    assert str(e.value) == said


@pytest.mark.parametrize("model, columns", [
    (FMPairModel, ("userCol", "itemCol", "userctxfeaturesCol", "filterItemsCol",
                   "predictionCol", "rankCol")),
    (MFSGDModel, ("userCol", "itemCol", "predictionCol", "coldStartStrategy", "rankCol")),
    (PassiveAggressiveModel, ("featuresCol", "predictionCol", "rawPredictionCol")),
])
def test_a_fitted_model_sets_the_columns_it_reads_and_writes(model, columns):
    """As ALSModel.setPredictionCol: a fitted model's setters of its columns (and only
    those: its hyper-parameters are what fit used)."""
    m = model()
    for name in columns:
        cap = name[0].upper() + name[1:]
        assert getattr(m, f"set{cap}")("chosen") is m
        assert getattr(m, f"get{cap}")() == "chosen"
    assert not hasattr(m, "setMaxIter")

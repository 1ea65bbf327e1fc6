"""PassiveAggressive through Spark on the real local SparkSession: the weights against a
sequential numpy PA (one partition, batches of one), predictions and raw margins
against numpy scoring of the weights the model holds, the pyspark.ml evaluators and
CrossValidator, persistence, both Spark modes, and Structured Streaming — progressive
accuracy per micro-batch, live scoring by a batch job and by another streaming query,
and a restarted query that does not learn a replayed micro-batch twice."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator
from pyspark.ml.linalg import Vectors
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
from sklearn.feature_extraction import FeatureHasher

from psframework import ConfigError, LocalCluster
from models.pa import PassiveAggressive, PassiveAggressiveModel, StreamingPassiveAggressive
from models.synthetic_text import make_messages
from conftest import FAST, SPARK_SECRET
from test_pa import reference_pa, sparse_data

SECRET_CONF = {"spark.psframework.secret": SPARK_SECRET,
               "spark.executorEnv.PSF_SECRET": SPARK_SECRET}
BITS = 12


@pytest.fixture(scope="module")
def session(spark_session):
    return spark_session("local[4]", SECRET_CONF)


@pytest.fixture(scope="module")
def messages():
    data = make_messages(3000, vocabulary=2000, label_noise=0.05, seed=8)
    return data, FeatureHasher(2 ** BITS, input_type="string").transform(data.words)


def message_frame(session, data, rows=slice(None)):
    return session.createDataFrame(pa.table({"words": data.words[rows],
                                             "label": data.labels[rows].astype(float)}))


def margins(model: PassiveAggressiveModel, X) -> np.ndarray:
    """w · x + b of every weight vector, by numpy from the model's weights."""
    return X @ model.coefficientMatrix.toArray().T + model.interceptVector.toArray()


def test_one_partition_batches_of_one_is_the_sequential_pa(session):
    X, y = sparse_data(400, 10, 3, seed=21)
    w, b, mistakes = reference_pa(X.astype(np.float64), y, 3, "pa2", 0.5, intercept=True)
    df = session.createDataFrame([(Vectors.dense(x), float(label)) for x, label in zip(X, y)],
                                 ["features", "label"]).coalesce(1)
    model = PassiveAggressive(variant="pa2", C=0.5, maxIter=1, batchSize=1).fit(df)
    assert model.numClasses == 3 and model.numFeatures == 10
    np.testing.assert_allclose(model.coefficientMatrix.toArray(), w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.interceptVector.toArray(), b, rtol=1e-4, atol=1e-5)
    assert model.history[0]["accuracy"] == pytest.approx(1 - mistakes / 400)
    out = model.transform(df).toPandas()
    expected = margins(model, X)
    np.testing.assert_allclose(np.stack(out["rawPrediction"].map(lambda v: v.toArray())),
                               expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out["prediction"], expected.argmax(1).astype(float))


def test_hashed_strings_evaluators_and_persistence(session, messages, tmp_path):
    data, X = messages
    train, test = message_frame(session, data, slice(0, 2500)), message_frame(
        session, data, slice(2500, None))
    model = PassiveAggressive(featuresCol="words", hashBits=BITS, maxIter=3,
                              numParameterServers=2).fit(train.repartition(3))
    assert [e["epoch"] for e in model.history] == [0, 1, 2]
    assert model.history[2]["accuracy"] > model.history[0]["accuracy"]
    out = model.transform(test).toPandas()
    m = margins(model, X[2500:])[:, 0]  # the hash is FeatureHasher's: numpy scores agree
    raw = np.stack(out["rawPrediction"].map(lambda v: v.toArray()))
    np.testing.assert_allclose(raw, np.column_stack([-m, m]), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out["prediction"], (m > 0).astype(float))
    scored = model.transform(test)
    auc = BinaryClassificationEvaluator().evaluate(scored)
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(scored)
    assert accuracy == pytest.approx(np.mean((m > 0) == data.labels[2500:]))
    assert auc > 0.9 and accuracy > 0.85, (auc, accuracy)
    model.write().overwrite().save(str(tmp_path / "pa"))
    loaded = PassiveAggressiveModel.load(str(tmp_path / "pa"))
    assert loaded.history == model.history and loaded.getHashBits() == BITS
    np.testing.assert_array_equal(loaded.transform(test).toPandas()["prediction"],
                                  out["prediction"])


def test_cross_validator_picks_between_settings(session, messages):
    data, _ = messages
    df = message_frame(session, data, slice(0, 1200))
    pa_ = PassiveAggressive(featuresCol="words", hashBits=BITS, maxIter=1)
    grid = ParamGridBuilder().addGrid(pa_.C, [1e-4, 1.0]).build()
    cv = CrossValidator(estimator=pa_, estimatorParamMaps=grid, numFolds=2, seed=1,
                        evaluator=BinaryClassificationEvaluator()).fit(df)
    assert len(cv.avgMetrics) == 2 and all(0.5 < m <= 1 for m in cv.avgMetrics)
    assert isinstance(cv.bestModel, PassiveAggressiveModel)


def test_separate_mode(session, messages):
    data, _ = messages
    with LocalCluster(shards=2, secret=SPARK_SECRET, **FAST) as cluster:
        model = PassiveAggressive(featuresCol="words", hashBits=BITS, maxIter=1,
                                  parameterServerHost=cluster.address).fit(
            message_frame(session, data, slice(0, 1000)))
        assert cluster.client().status()["models"] == []  # fit leaves nothing behind
    assert model.history[0]["examples"] == 1000


@pytest.mark.parametrize("params, match", [
    ({"variant": "pa9"}, "variant"), ({"C": 0.0}, "C"), ({"hashBits": 40}, "hashBits"),
    ({"featuresCol": "label"}, "must be a Vector"), ({"labelCol": "words"}, "labelCol.*numbers"),
    ({"parameterServerHost": "nowhere"}, "parameterServerHost")])
def test_bad_params_and_columns(session, messages, params, match):
    data, _ = messages
    df = message_frame(session, data, slice(0, 10))
    base = {"featuresCol": "words"}
    with pytest.raises(ConfigError, match=match):
        PassiveAggressive(**{**base, **params}).fit(df)


def write_parts(folder, data, X, parts):
    """Messages as one parquet file per part, in order (the stream reads one per
    micro-batch). Spark orders new files by modification time, in milliseconds, and
    files written within one millisecond in any order: part i is dated i seconds after
    an hour ago, so the order is the parts' whatever the clock's resolution."""
    folder.mkdir(exist_ok=True)
    an_hour_ago = time.time_ns() - 3600 * 10**9
    for i, rows in parts:
        path = folder / f"part-{i:03d}.parquet"
        pq.write_table(pa.table({"words": data.words[rows],
                                 "label": data.labels[rows].astype(float)}), path)
        dated = an_hour_ago + i * 10**9
        os.utime(path, ns=(dated, dated))


def test_streaming_learns_each_micro_batch_once(session, messages, tmp_path):
    """Files of 200 messages, one per micro-batch, one partition each, batchSize 1:
    the stream is the sequential PA over the files in order. A restarted query whose
    last micro-batch Spark had not committed gets it again: it is skipped."""
    data, X = messages
    source, checkpoint = tmp_path / "in", tmp_path / "checkpoint"
    write_parts(source, data, X, [(i, slice(200 * i, 200 * (i + 1))) for i in range(3)])
    reader = session.readStream.schema("words array<string>, label double") \
        .option("maxFilesPerTrigger", 1)
    X64 = X.toarray().astype(np.float64)
    with LocalCluster(shards=2, secret=SPARK_SECRET, **FAST) as cluster:
        seen = []
        stream = StreamingPassiveAggressive(
            session, [0.0, 1.0], featuresCol="words", hashBits=BITS, batchSize=1,
            parameterServerHost=cluster.address, modelName="spam", callback=seen.append)
        query = stream.start(reader.parquet(str(source)), trigger={"availableNow": True},
                             checkpointLocation=str(checkpoint))
        query.awaitTermination(120)
        assert [e["batch_id"] for e in seen] == [0, 1, 2] == [e["batch_id"] for e in
                                                             stream.history]
        w, b, mistakes = reference_pa(X64[:600], data.labels[:600], 1, "pa1", 1.0, True)
        assert seen[-1]["progressive_accuracy"] == pytest.approx(1 - mistakes / 600)
        live = stream.transform(message_frame(session, data, slice(2500, None))).toPandas()
        m = X64[2500:] @ w[0] + b[0]
        np.testing.assert_allclose(np.stack(live["rawPrediction"].map(lambda v: v[1])), m,
                                   rtol=1e-3, atol=1e-3)
        write_parts(tmp_path / "held", data, X, [(0, slice(2500, None))])
        held = reader.parquet(str(tmp_path / "held"))
        scoring = (stream.transform(held).writeStream.format("memory")  # another query,
                   .queryName("pa_scores").trigger(availableNow=True).start())  # live weights
        scoring.awaitTermination(120)
        streamed = session.sql("SELECT rawPrediction FROM pa_scores").toPandas()
        np.testing.assert_allclose(np.sort(streamed["rawPrediction"].map(lambda v: v[1])),
                                   np.sort(m), rtol=1e-3, atol=1e-3)
        stream.stop()  # named, on a separate cluster: the model stays there
        assert "spam" in [m["name"] for m in cluster.client().status()["models"]]

        (checkpoint / "commits" / "2").unlink()  # as if the driver died before the commit
        (checkpoint / "commits" / ".2.crc").unlink(missing_ok=True)
        write_parts(source, data, X, [(3, slice(600, 800))])
        again = StreamingPassiveAggressive(
            session, [0.0, 1.0], featuresCol="words", hashBits=BITS, batchSize=1,
            parameterServerHost=cluster.address, modelName="spam")
        again.start(reader.parquet(str(source)), trigger={"availableNow": True},
                    checkpointLocation=str(checkpoint)).awaitTermination(120)
        assert again.skipped == [2]  # Spark delivered 2 again; it was not learned twice
        assert [e["batch_id"] for e in again.history] == [3]
        w, b, _ = reference_pa(X64[:800], data.labels[:800], 1, "pa1", 1.0, True)
        snapshot = again.model()
        np.testing.assert_allclose(snapshot.coefficients.toArray()[:X64.shape[1]], w[0],
                                   rtol=1e-3, atol=1e-4)
        again.stop()
        cluster.client().destroy("spam")


def test_streaming_continues_from_a_saved_model(session, messages, tmp_path):
    """Integrated mode, a stream started from a saved PassiveAggressiveModel: one
    micro-batch learned in batches of one from the saved weights is the sequential PA
    from them."""
    data, X = messages
    fitted = PassiveAggressive(featuresCol="words", hashBits=BITS, maxIter=2).fit(
        message_frame(session, data, slice(0, 2000)).coalesce(1))
    fitted.write().overwrite().save(str(tmp_path / "saved"))
    saved = PassiveAggressiveModel.load(str(tmp_path / "saved"))
    write_parts(tmp_path / "in", data, X, [(0, slice(2000, 2400))])
    sdf = session.readStream.schema("words array<string>, label double").parquet(
        str(tmp_path / "in"))
    with StreamingPassiveAggressive(session, [0.0, 1.0], featuresCol="words",
                                    initialModel=saved, batchSize=1) as stream:
        stream.start(sdf, trigger={"availableNow": True}).awaitTermination(120)
        (entry,) = stream.history
        w, b, mistakes = reference_pa(
            X[2000:2400].toarray().astype(np.float64), data.labels[2000:2400], 1, "pa1", 1.0,
            True, start=(saved.coefficientMatrix.toArray(), saved.interceptVector.toArray()))
        np.testing.assert_allclose(stream.model().coefficients.toArray(), w[0], rtol=1e-3,
                                   atol=1e-4)
    assert entry["accuracy"] == pytest.approx(1 - mistakes / 400)


def test_streaming_refuses_a_label_outside_its_classes(session, tmp_path):
    write_parts(tmp_path / "in", SimpleNamespace(words=[["a", "b"], ["c"]],
                                                 labels=np.array([1, 2])), None,
                [(0, slice(None))])
    sdf = session.readStream.schema("words array<string>, label double").parquet(
        str(tmp_path / "in"))
    with StreamingPassiveAggressive(session, [0.0, 1.0], featuresCol="words",
                                    hashBits=8) as stream:
        query = stream.start(sdf, trigger={"availableNow": True})
        with pytest.raises(Exception, match="label 2.0 is not one of the classes"):
            query.awaitTermination(120)

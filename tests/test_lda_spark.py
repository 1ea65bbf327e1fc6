"""LDA through Spark (the pyspark.ml `LDA` Estimator and `LDAModel`) on the real local
SparkSession: one partition samples exactly as LocalLDA with one worker; two partitions
recover the topics of a synthetic corpus; transform, logLikelihood and logPerplexity
against the local fold-in and numpy; describeTopics against topicsMatrix; persistence;
both Spark modes; bad input and params refused with the fix; MLlib's names."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from pyspark.ml.clustering import LDA as MLlibLDA
from pyspark.ml.linalg import DenseVector, Vectors, VectorUDT
from pyspark.sql import types as T
from scipy.optimize import linear_sum_assignment

from psframework import ConfigError
from psframework.spark import ml
from models.lda import LDA, LDAModel, LocalLDA
from models.lda.evaluate import fold_in
from models.synthetic_topics import make_corpus
from conftest import SPARK_SECRET

SCHEMA = T.StructType([T.StructField("id", T.LongType()),
                       T.StructField("features", VectorUDT())])


def rows(X: sp.csr_matrix, first: int = 0) -> list[tuple]:
    """(id, SparseVector of counts) per row of X, as CountVectorizer gives them."""
    return [(first + d, Vectors.sparse(X.shape[1], X[d].indices.tolist(),
                                       X[d].data.astype(float).tolist()))
            for d in range(X.shape[0])]


def frame(spark, X: sp.csr_matrix, partitions: int):
    """X's rows in order, split into `partitions` contiguous partitions."""
    return spark.createDataFrame(spark.sparkContext.parallelize(rows(X), partitions), SCHEMA)


def matched_cosines(learned: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Cosine similarity of each true topic with the learned topic the Hungarian
    assignment pairs it with (the pairing that maximises their sum)."""
    a = learned / np.linalg.norm(learned, axis=1, keepdims=True)
    b = true / np.linalg.norm(true, axis=1, keepdims=True)
    similarity = a @ b.T
    r, c = linear_sum_assignment(-similarity)
    return similarity[r, c]


@pytest.fixture(scope="module")
def small():
    """~4,800 tokens: one block per worker, so that one worker samples deterministically."""
    return make_corpus(120, vocabulary=150, topics=4, doc_length=40, seed=3).docs


@pytest.fixture(scope="module")
def mixed():
    """Documents mixing 5 topics (α = 1) over 200 words, each topic 80% its own words.
    Checked: 40 Spark fits per sampler on two partitions (half on this corpus, half on
    corpora of other seeds), and 60 LocalLDA fits with two workers over 10 corpora,
    each recovered every topic with cosine > 0.98 (exact sampler, 80 iterations; MH,
    150); documents of one topic each (α = 0.1) or topics sharing more of their words
    leave Gibbs stuck in merged and split topics on some seeds."""
    return make_corpus(400, vocabulary=200, topics=5, doc_length=80, alpha=1.0,
                       separation=0.8, seed=104)


@pytest.fixture(scope="module")
def fitted(secret_spark, mixed):
    """The MH sampler on two partitions, integrated mode (shards on the executors)."""
    df = frame(secret_spark, mixed.docs, 2)
    model = LDA(k=5, maxIter=150, docConcentration=0.5, topicConcentration=0.01, seed=5,
                evaluateEvery=10, numParameterServers=2).fit(df)
    return model


# -- fitting ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["mh", "exact"])
def test_one_partition_samples_exactly_as_local_lda_with_one_worker(
        secret_spark, secret_cluster, small, sampler, monkeypatch):
    """Separate mode; the partition comes from a coalesce (which a barrier stage may not
    contain: fit materializes the documents first)."""
    monkeypatch.setenv("PSF_SECRET", SPARK_SECRET)  # LocalLDA's client, on the same cluster
    params = dict(k=4, seed=11, sampler=sampler, mh_steps=2, alpha=0.3, beta=0.05,
                  evaluate_every=2)
    df = secret_spark.createDataFrame(rows(small), SCHEMA).coalesce(1)
    model = LDA(maxIter=6, mhSteps=2, docConcentration=0.3, topicConcentration=0.05,
                evaluateEvery=2, k=4, seed=11, sampler=sampler,
                parameterServerHost=secret_cluster.address).fit(df)
    local = LocalLDA(iterations=6, num_workers=1, master=secret_cluster.address,
                     show_progress=False, **params).fit(small)
    np.testing.assert_array_equal(model.state.components_, local.components_)
    np.testing.assert_array_equal(model.topicsMatrix().toArray(), local.topic_word_.T)
    assert [h["iteration"] for h in model.history] == list(range(6))
    for spark_entry, local_entry in zip(model.history, local.history_):
        assert spark_entry["log_likelihood"] == pytest.approx(local_entry["log_likelihood"],
                                                              rel=1e-12)
        if local_entry["perplexity"] is None:
            assert spark_entry["perplexity"] is None
        else:
            assert spark_entry["perplexity"] == pytest.approx(local_entry["perplexity"],
                                                              rel=1e-12)
    # the fit's model and its log-likelihood matrix are gone from the cluster
    client = secret_cluster.client()
    assert not [m["name"] for m in client.status()["models"] if m["name"].startswith("lda-")]
    client.close()


def check_recovered(model, corpus, iterations: int) -> None:
    counts = model.state.components_ - model.state.beta  # k × V
    assert int(round(counts.sum())) == int(corpus.docs.sum())  # nothing lost or doubled
    cosines = matched_cosines(model.state.topic_word_, corpus.topic_word)
    assert cosines.min() > 0.95, cosines
    lls = [h["log_likelihood"] for h in model.history]
    assert len(lls) == iterations and lls[-1] > lls[0]


def test_two_partitions_recover_the_true_topics_mh_integrated(fitted, mixed):
    check_recovered(fitted, mixed, 150)
    evaluated = [h for h in fitted.history if h["perplexity"] is not None]
    assert [h["iteration"] for h in evaluated] == list(range(9, 150, 10))
    assert evaluated[-1]["perplexity"] < evaluated[0]["perplexity"]
    assert all(h["tokens_per_s"] > 0 and h["seconds"] > 0 for h in fitted.history)


def test_two_partitions_recover_the_true_topics_exact_separate(secret_spark, secret_cluster,
                                                                mixed):
    df = frame(secret_spark, mixed.docs, 2)
    model = LDA(k=5, maxIter=80, docConcentration=0.5, topicConcentration=0.01, seed=6,
                sampler="exact", evaluateEvery=0,
                parameterServerHost=secret_cluster.address).fit(df)
    check_recovered(model, mixed, 80)
    assert all(h["perplexity"] is None for h in model.history)


def test_more_partitions_than_task_slots_are_repartitioned(secret_spark, secret_cluster,
                                                          small):
    """local[4]: a barrier stage of 6 tasks could never start."""
    df = frame(secret_spark, small, 6)
    model = LDA(k=3, maxIter=2, parameterServerHost=secret_cluster.address).fit(df)
    assert int(round((model.state.components_ - model.state.beta).sum())) == small.sum()


# -- the fitted model ------------------------------------------------------------------------
def scoring_frame(spark, X: sp.csr_matrix):
    """X's rows, an empty document, a dense vector and a null one."""
    V = X.shape[1]
    dense = np.zeros(V)
    dense[[0, 3, 7]] = [2, 1, 5]
    extra = [(X.shape[0], Vectors.sparse(V, [], [])), (X.shape[0] + 1, DenseVector(dense)),
             (X.shape[0] + 2, None)]
    df = spark.createDataFrame(rows(X) + extra, SCHEMA)
    full = sp.vstack([X, sp.csr_matrix((1, V)), sp.csr_matrix(dense)], format="csr")
    return df, full


def test_transform_is_the_local_fold_in_on_the_models_topics(secret_spark, fitted, mixed):
    X = mixed.docs[:60]
    df, full = scoring_frame(secret_spark, X)
    out = fitted.transform(df)
    assert out.schema["topicDistribution"].dataType == VectorUDT()
    assert out.columns == ["id", "features", "topicDistribution"]
    got = {r.id: r.topicDistribution for r in out.collect()}
    want = fold_in(full, fitted.state.topic_word_, fitted.getDocConcentration())
    assert got.pop(full.shape[0]) is None  # the null vector
    np.testing.assert_array_equal(np.array([got[d].toArray() for d in range(full.shape[0])]),
                                  want)
    renamed = fitted.copy().setTopicDistributionCol("theta").transform(df.where("id < 3"))
    assert renamed.columns == ["id", "features", "theta"]


def test_log_likelihood_and_perplexity_equal_numpy(secret_spark, fitted, mixed):
    X = mixed.docs[200:300]
    df = frame(secret_spark, X, 3)
    phi = fitted.topicsMatrix().toArray().T  # k × V
    theta = fold_in(X, phi, fitted.getDocConcentration())
    ll = float((X.toarray() * np.log(theta @ phi)).sum())
    assert fitted.logLikelihood(df) == pytest.approx(ll, rel=1e-10)
    assert fitted.logPerplexity(df) == pytest.approx(-ll / X.sum(), rel=1e-10)


def test_describe_topics_is_the_argsort_of_topics_matrix(fitted):
    M = fitted.topicsMatrix().toArray()  # V × k, columns sum to 1
    assert M.shape == (fitted.vocabSize(), 5) == (200, 5)
    np.testing.assert_allclose(M.sum(axis=0), 1.0, rtol=1e-12)
    frame_ = fitted.describeTopics(6)
    assert frame_.schema.simpleString() == (
        "struct<topic:int,termIndices:array<int>,termWeights:array<double>>")
    got = sorted(frame_.collect())
    assert [r.topic for r in got] == list(range(5))
    for r in got:
        order = np.argsort(-M[:, r.topic], kind="stable")[:6]
        assert r.termIndices == order.tolist()
        assert r.termWeights == M[order, r.topic].tolist()
    assert all(len(r.termIndices) == 10 for r in fitted.describeTopics().collect())
    with pytest.raises(ConfigError, match="maxTermsPerTopic"):
        fitted.describeTopics(0)


def test_what_the_model_says_of_itself(fitted):
    assert fitted.isDistributed() is False
    assert fitted.estimatedDocConcentration() == DenseVector([0.5] * 5)
    assert fitted.getK() == 5 and fitted.getMaxIter() == 150
    with pytest.raises(ConfigError, match="holds no topics"):
        LDAModel().topicsMatrix()


def test_save_and_load_keep_topics_and_transform(secret_spark, fitted, mixed, tmp_path):
    fitted.save(str(tmp_path / "lda"))
    loaded = LDAModel.load(str(tmp_path / "lda"))
    np.testing.assert_array_equal(loaded.topicsMatrix().toArray(),
                                  fitted.topicsMatrix().toArray())
    df = frame(secret_spark, mixed.docs[:40], 2)
    def thetas(m):
        return sorted((r.id, r.topicDistribution.toArray().tolist())
                      for r in m.transform(df).collect())
    assert thetas(loaded) == thetas(fitted)
    assert loaded.history == fitted.history and loaded.uid == fitted.uid
    assert loaded.getK() == 5 and loaded.vocabSize() == 200
    assert loaded.getTopicConcentration() == 0.01


# -- refusals and names ----------------------------------------------------------------------
@pytest.mark.parametrize("data, schema, match", [
    ([(0, Vectors.sparse(4, [1], [0.5]))], SCHEMA, r"word counts.*0\.5.*CountVectorizer"),
    ([(0, Vectors.dense([1.0, -2.0]))], SCHEMA, r"integers >= 0.*CountVectorizer"),
    ([(0, Vectors.sparse(4, [1], [2.0])), (1, None)], SCHEMA, r"nulls.*CountVectorizer"),
    ([(0, Vectors.sparse(4, [1], [2.0])), (1, Vectors.sparse(5, [1], [1.0]))], SCHEMA,
     r"size.*CountVectorizerModel"),
    ([(0, Vectors.sparse(4, [], []))], SCHEMA, "no tokens"),
    ([(0, "a rose is a rose")], "id long, features string", r"Vector.*CountVectorizer.*string"),
    ([(0, ["a", "rose"])], "id long, features array<string>", r"CountVectorizer.*array<string>"),
])
def test_bad_documents_are_refused_naming_the_column_and_the_fix(secret_spark, data, schema,
                                                                 match):
    df = secret_spark.createDataFrame(data, schema)
    with pytest.raises(ConfigError, match=match) as e:
        LDA(parameterServerHost="127.0.0.1:1").fit(df)  # refused before any server is used
    assert "'features'" in str(e.value)
    with pytest.raises(ConfigError, match="featuresCol: column 'counts' is not in"):
        LDA(featuresCol="counts").fit(df)


@pytest.mark.parametrize("bad, match", [
    ({"k": 0}, "k"), ({"sampler": "gibbs"}, "sampler"), ({"docConcentration": 0.0},
                                                         "docConcentration"),
    ({"topicConcentration": -1.0}, "topicConcentration"), ({"maxIter": 0}, "maxIter"),
    ({"parameterServerHost": "nowhere"}, "parameterServerHost")])
def test_bad_params_are_refused_before_any_job(secret_spark, small, bad, match):
    df = frame(secret_spark, small[:5], 1)
    tracker = secret_spark.sparkContext.statusTracker()
    before = len(tracker.getJobIdsForGroup(None))
    with pytest.raises(ConfigError, match=match):
        LDA(**bad).fit(df)
    assert len(tracker.getJobIdsForGroup(None)) == before


def test_params_are_mllibs_where_shared():
    shared = {"featuresCol", "k", "maxIter", "seed", "docConcentration", "topicConcentration",
              "topicDistributionCol"}
    ours, theirs = LDA(), MLlibLDA()
    assert set(ml.param_names(LDA)) == shared | {
        "mhSteps", "sampler", "evaluateEvery", "numParameterServers", "parameterServerHost",
        "replicas"}
    assert all(theirs.hasParam(n) for n in shared)
    for name in ("k", "featuresCol", "topicDistributionCol"):
        assert ours.getOrDefault(name) == theirs.getOrDefault(name)
    assert ours.getK() == 10 and ours.getSampler() == "mh" and ours.getMhSteps() == 2
    assert LDA(k=7, maxIter=3).setSeed(4).getSeed() == 4
    model = LDAModel()
    for name in ("featuresCol", "topicDistributionCol"):  # as MLlib's LDAModel
        cap = name[0].upper() + name[1:]
        assert getattr(model, f"set{cap}")("chosen") is model
        assert getattr(model, f"get{cap}")() == "chosen"
    assert not hasattr(model, "setMaxIter") and not hasattr(model, "setK")

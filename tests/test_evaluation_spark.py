"""`models.spark_evaluation.RecommendationEvaluator` and the rank column of FMPairModel and
MFSGDModel, on a real local SparkSession with real parameter servers (separate mode: one
LocalCluster for the module, so that a fit does not wait out an integrated cluster's
shutdown), checked against references computed here from the models' parameters:

1. each metric equals `models.metrics` (and a numpy MAP) computed from dense numpy
   scores of the fitted model, its training matrix left out;
2. CrossValidator with the evaluator picks the numDims that fits clustered data;
3. the rank column equals numpy's rank for chosen rows: ties, a training item, unknown
   ids."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
from pyspark.sql import types as T

from psframework import ConfigError
from models.spark_evaluation import METRICS, RecommendationEvaluator
from models.fmpair import FMPair, FMPairModel
from models.metrics import evaluate
from models.mf_sgd import MFSGD, MFSGDModel
from models.synthetic import make_synthetic
from models.synthetic_ratings import make_ratings

K = 5
PAIRS = T.StructType([T.StructField("user", T.LongType()), T.StructField("item", T.LongType())])


def pairs_frame(secret_spark, matrix: sp.spmatrix, extra=()):
    coo = matrix.tocoo()
    rows = list(zip(coo.row.tolist(), coo.col.tolist())) + list(extra)
    return secret_spark.createDataFrame(rows, PAIRS)


def strict_ranks(scores: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """numpy's rank of every item among a user's candidates (rows of `scores`): 1 + the
    candidates scoring higher + the equal candidates of lower id; 0 for non-candidates."""
    s = np.where(candidate, scores, -np.inf)
    n_items = scores.shape[1]
    ids = np.arange(n_items)
    higher = (s[:, None, :] > s[:, :, None]) & candidate[:, None, :]
    tied = ((s[:, None, :] == s[:, :, None]) & candidate[:, None, :]
            & (ids[None, :] < ids[:, None])[None])
    return np.where(candidate, 1 + higher.sum(axis=2) + tied.sum(axis=2), 0)


def reference_metrics(scores: np.ndarray, test: sp.csr_matrix, left_out: sp.csr_matrix,
                      k: int) -> dict[str, float]:
    """The five metrics from dense scores: models.metrics for four; MAP (AP over the
    whole candidate ranking, averaged over users with a positive) written out here."""
    got = evaluate(scores, test, train=left_out, k=k)
    candidate = left_out.toarray() == 0
    positive = (test.toarray() != 0) & candidate
    ranks = strict_ranks(scores, candidate)
    aps = []
    for u in np.flatnonzero(positive.any(axis=1)):
        r = np.sort(ranks[u, positive[u]])
        aps.append(np.mean(np.arange(1, r.size + 1) / r))
    # ties would make models.metrics' AUC (ties 1/2) differ from the strict ranks'
    assert all(np.unique(scores[u, candidate[u]]).size == candidate[u].sum()
               for u in range(scores.shape[0]))
    return {"precisionAtK": got[f"precision@{k}"], "recallAtK": got[f"recall@{k}"],
            "ndcgAtK": got[f"ndcg@{k}"], "areaUnderROC": got["auc"],
            "meanAveragePrecision": float(np.mean(aps))}


def spark_metrics(scored, **params) -> dict[str, float]:
    """Every metric of `scored` (cached by the caller: each evaluation reads it)."""
    return {name: RecommendationEvaluator(metricName=name, k=K, **params).evaluate(scored)
            for name in METRICS}


# -- FMPair --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def implicit():
    data = make_synthetic(n_users=150, n_items=100, n_clusters=5, n_artists=5,
                          interactions_per_user=10, popularity_exponent=0.5,
                          test_fraction=0.3, seed=4)
    assert (data.train.getnnz(axis=0) > 0).all() and (data.train.getnnz(axis=1) > 0).all()
    return data


@pytest.fixture(scope="module")
def fmpair(secret_spark, secret_cluster, implicit):
    model = FMPair(numDims=8, maxIter=5, loss="warp", seed=3, rankCol="rank",
                   parameterServerHost=secret_cluster.address,
                   ).fit(pairs_frame(secret_spark, implicit.train))
    state = model.state
    n_users = implicit.n_users
    users = state.factors_[:n_users].astype(np.float64)
    items = state.factors_[n_users:].astype(np.float64)
    scores = users @ items.T + state.linear_[n_users:].astype(np.float64).ravel()
    return SimpleNamespace(model=model, scores=scores)


def test_fmpair_metrics_equal_numpy_references(secret_spark, implicit, fmpair):
    n_users, n_items = implicit.n_users, implicit.n_items
    train_pair = tuple(int(x) for x in np.argwhere(implicit.train.toarray())[0])
    odd = [train_pair,                  # a training item: no rank, not a positive
           (n_users + 3, 0),            # a user fit never saw (cold start)
           (0, n_items + 7)]            # an item the model does not know
    scored = fmpair.model.transform(pairs_frame(secret_spark, implicit.test, odd)).cache()
    got = spark_metrics(scored)
    want = reference_metrics(fmpair.scores, implicit.test.tocsr(), implicit.train.tocsr(), K)
    for name in METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name
    assert want["precisionAtK"] > 0  # it learned something: the check is not vacuous
    odd_rows = {(r.user, r.item): (r.rank, r.rankCandidates) for r in scored.collect()
                if (r.user, r.item) in set(odd)}
    assert odd_rows[odd[0]] == (None, n_items - implicit.train[train_pair[0]].nnz)
    assert odd_rows[odd[1]] == (None, None)
    assert odd_rows[odd[2]] == (None, n_items - implicit.train[0].nnz)


def test_labels_below_the_threshold_are_not_positives(secret_spark, implicit, fmpair):
    """labelCol + threshold: only rows labelled >= threshold count, the rest stay
    candidates (negatives), as an explicit zero would in models.metrics."""
    coo = implicit.test.tocoo()
    keep = np.arange(coo.nnz) % 2 == 0
    rows = [(int(u), int(i), float(k)) for u, i, k in zip(coo.row, coo.col, keep)]
    df = secret_spark.createDataFrame(rows, "user long, item long, label double")
    scored = fmpair.model.transform(df).cache()
    got = spark_metrics(scored, labelCol="label", threshold=0.5)
    half = sp.csr_matrix((np.ones(keep.sum()), (coo.row[keep], coo.col[keep])),
                         shape=implicit.test.shape)
    want = reference_metrics(fmpair.scores, half, implicit.train.tocsr(), K)
    for name in METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name


def test_rank_column_equals_numpy_with_ties_training_items_and_unknown_ids(
        secret_spark, implicit, fmpair):
    """Items 10, 11 and 12 get item 10's parameters, so they tie for every user: their
    ranks must follow their ids."""
    state = copy.deepcopy(fmpair.model.state)
    offset = state.space_.item_offset
    for b in (11, 12):
        state.factors_[offset + b] = state.factors_[offset + 10]
        state.linear_[offset + b] = state.linear_[offset + 10]
    tied = FMPairModel(state, fmpair.model.users).setRankCol("r")
    n_users = implicit.n_users
    scores = (state.factors_[:n_users].astype(np.float64)
              @ state.factors_[offset:].astype(np.float64).T
              + state.linear_[offset:].astype(np.float64).ravel())
    train = implicit.train.toarray() != 0
    reference = strict_ranks(scores, ~train)
    asked = []
    for u in (0, 7, 42):
        seen = int(np.flatnonzero(train[u])[0])
        asked += [(u, 10), (u, 11), (u, 12), (u, seen), (u, 99), (u, 3)]
    asked = list(dict.fromkeys(asked + [(n_users + 1, 10), (-1, 10), (5, -2)]))
    out = tied.transform(secret_spark.createDataFrame(asked, PAIRS)).collect()
    assert sorted((r.user, r.item) for r in out) == sorted(asked)
    for r in out:
        u, i = r.user, r.item
        if 0 <= u < n_users:
            assert r.rCandidates == (~train[u]).sum()
            want = reference[u, i] if 0 <= i < implicit.n_items and not train[u, i] else 0
            assert (r.r or 0) == want, (u, i)
        else:
            assert r.r is None and r.rCandidates is None
    for u in (0, 7, 42):
        assert scores[u, 10] == scores[u, 11] == scores[u, 12]
        ranks = {r.item: r.r for r in out if r.user == u and r.item in (10, 11, 12)}
        live = [ranks[i] for i in (10, 11, 12) if not train[u, i]]
        assert live == sorted(live) and len(set(live)) == len(live)
        if len(live) == 3:
            assert live[2] - live[0] == 2  # consecutive: nothing can sit between ties


def test_without_rank_col_transform_adds_only_the_prediction(secret_spark, implicit, fmpair):
    model = FMPairModel(fmpair.model.state, fmpair.model.users)
    df = pairs_frame(secret_spark, implicit.test)
    assert model.transform(df).columns == ["user", "item", "prediction"]
    with pytest.raises(ConfigError, match=r"set rankCol on the estimator, e\.g\. "
                                          r"FMPair\(rankCol='rank'\)"):
        RecommendationEvaluator().evaluate(model.transform(df))
    with pytest.raises(ConfigError, match="metricName"):
        RecommendationEvaluator(metricName="auc").evaluate(fmpair.model.transform(df))


def test_the_evaluator_round_trips_through_persistence(secret_spark, tmp_path):
    evaluator = RecommendationEvaluator(metricName="recallAtK", k=3, userCol="u",
                                        rankCol="r", labelCol="rating", threshold=4.0)
    evaluator.save(str(tmp_path / "evaluator"))
    again = RecommendationEvaluator.load(str(tmp_path / "evaluator"))
    assert again.extractParamMap() == evaluator.extractParamMap()
    assert (again.getMetricName(), again.getK(), again.getLabelCol(), again.getThreshold()
            ) == ("recallAtK", 3, "rating", 4.0)
    assert again.isLargerBetter()


# -- MF-SGD --------------------------------------------------------------------------------
def test_mf_sgd_metrics_equal_numpy_references(secret_spark, secret_cluster, tmp_path):
    """Ratings >= 3.5 are the positives; candidates are the items rated in training but
    not by the user, so the reference leaves out the user's items and unrated ones. A
    saved and loaded model ranks as the fitted one (it keeps the users' rated items)."""
    data = make_ratings(80, 60, 12, rank=3, test_fraction=0.3, seed=5)
    train_df = secret_spark.createDataFrame(
        [(int(u), int(i), float(r)) for u, i, r in zip(*data.train)],
        "user long, item long, rating double")
    model = MFSGD(rank=3, maxIter=5, stepSize=0.02, seed=1, rankCol="rank",
                  parameterServerHost=secret_cluster.address).fit(train_df)
    s = model.state
    n_users, n_items = s.user_factors_.shape[0], s.item_factors_.shape[0]
    scores = (s.user_factors_.astype(np.float64) @ s.item_factors_.astype(np.float64).T
              + s.item_bias_.astype(np.float64))
    u, i, _ = data.train
    train = sp.csr_matrix((np.ones(u.size), (u, i)), shape=(n_users, n_items))
    unrated = np.broadcast_to(~model.rated_items, (n_users, n_items))
    left_out = sp.csr_matrix((train.toarray() != 0) | unrated)
    tu, ti, tr = data.test
    inside = ti < n_items
    positive = inside & (tr >= 3.5)
    test = sp.csr_matrix((np.ones(positive.sum()), (tu[positive], ti[positive])),
                         shape=(n_users, n_items))
    scored = model.transform(secret_spark.createDataFrame(
        [(int(a), int(b), float(c)) for a, b, c in zip(tu, ti, tr)],
        "user long, item long, rating double")).cache()
    got = spark_metrics(scored, labelCol="rating", threshold=3.5)
    want = reference_metrics(scores, test, left_out, K)
    for name in METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name
    assert 0 < want["areaUnderROC"] < 1
    model.save(str(tmp_path / "mf"))
    loaded = MFSGDModel.load(str(tmp_path / "mf"))
    assert loaded.getRankCol() == "rank"
    ranks = lambda m: sorted((r.user, r.item, r.rank, r.rankCandidates)  # noqa: E731
                             for r in m.transform(scored.select("user", "item")).collect())
    assert ranks(loaded) == ranks(model)


# -- tuning --------------------------------------------------------------------------------
def test_cross_validator_picks_the_numdims_that_fits_the_clusters(secret_spark, secret_cluster):
    """Eight clusters of users and items with no popularity to fall back on: one latent
    dimension cannot tell them apart, sixteen can."""
    data = make_synthetic(n_users=200, n_items=120, n_clusters=8, n_artists=8,
                          interactions_per_user=12, popularity_exponent=0.0, noise=0.05,
                          test_fraction=0.0, seed=11)
    df = pairs_frame(secret_spark, data.interactions)
    fmpair = FMPair(maxIter=8, loss="warp", seed=2, rankCol="rank",
                    parameterServerHost=secret_cluster.address)
    grid = ParamGridBuilder().addGrid(fmpair.numDims, [1, 16]).build()
    cv = CrossValidator(estimator=fmpair, estimatorParamMaps=grid, numFolds=2, seed=7,
                        evaluator=RecommendationEvaluator(metricName="ndcgAtK", k=10))
    fitted = cv.fit(df)
    low, high = fitted.avgMetrics
    assert fitted.bestModel.getNumDims() == 16
    assert high > 1.5 * low, fitted.avgMetrics

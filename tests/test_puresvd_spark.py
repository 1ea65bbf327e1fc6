"""PureSVD through Spark (the pyspark.ml `PureSVD` Estimator and `PureSVDModel`) on the
real local SparkSession, against numpy: on matrices with a clear spectral gap at the rank,
the randomized SVD with enough power iterations finds the exact top singular subspace,
so every score must be numpy's R·V·Vᵀ (V from np.linalg.svd), with the training pairs
left out of recommendations; for explicit ratings (several at one pair add up) and
implicit data (a pair seen twice is still a 1). Also: the same model whatever the input's
partitions and the parameter server's shards (integrated and separate mode), the same as
LocalPureSVD on the same data, cold start, persistence, and bad params refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from psframework import ConfigError
from models.rsvd import LocalPureSVD, PureSVD, PureSVDModel

RANK, OVERSAMPLE, POWER_ITER = 3, 15, 3  # scores within 1e-6 of the exact SVD's
N_USERS, N_ITEMS = 60, 40
GAP_USER, GAP_ITEM = 7, 5  # ids inside the range that no row holds: unknown to the model


def interactions(seed: int, explicit: bool) -> SimpleNamespace:
    """RANK groups of users, each interacting mostly with its group's items (ratings 4-5
    there, 1-2 elsewhere): R's top RANK singular values stand ~4× above the rest."""
    rng = np.random.default_rng(seed)
    same = (np.arange(N_USERS)[:, None] % RANK) == (np.arange(N_ITEMS)[None, :] % RANK)
    seen = rng.random((N_USERS, N_ITEMS)) < np.where(same, 0.8, 0.04)
    seen[GAP_USER, :] = seen[:, GAP_ITEM] = False
    users, items = np.nonzero(seen)
    values = np.where(same[users, items], rng.integers(4, 6, users.size),
                      rng.integers(1, 3, users.size)).astype(float) if explicit else None
    R = np.zeros((N_USERS, N_ITEMS))
    R[users, items] = 1.0 if values is None else values
    s = np.linalg.svd(R, compute_uv=False)
    assert s[RANK - 1] > 3 * s[RANK]  # the gap that makes the randomized subspace exact
    V = np.linalg.svd(R)[2][:RANK].T
    rows = SimpleNamespace(users=users, items=items, values=values, R=R, seen=seen, s=s,
                           scores=R @ V @ V.T, known_users=seen.any(1),
                           known_items=seen.any(0))
    # every input row twice, halved: ratings at one pair add up, implicit pairs stay 1
    rows.frame_users, rows.frame_items = np.tile(users, 2), np.tile(items, 2)
    rows.frame_values = None if values is None else np.tile(values / 2, 2)
    return rows


def frame(session, data, parts: int):
    """Ids as doubles, as StringIndexer leaves them."""
    columns = {"user": data.frame_users.astype(np.float64),
               "item": data.frame_items.astype(np.float64)}
    if data.frame_values is not None:
        columns["rating"] = data.frame_values
    return session.createDataFrame(pa.table(columns)).repartition(parts)


def puresvd(**params) -> PureSVD:
    return PureSVD(rank=RANK, oversample=OVERSAMPLE, powerIter=POWER_ITER, **params)


@pytest.fixture(scope="module")
def explicit(secret_spark, secret_cluster):
    """Fitted in separate mode: on the 2 shards of a running cluster."""
    data = interactions(1, explicit=True)
    data.model = puresvd(ratingCol="rating", parameterServerHost=secret_cluster.address
                         ).fit(frame(secret_spark, data, 3))
    return data


@pytest.fixture(scope="module")
def implicit(secret_spark, secret_cluster):
    """Fitted twice: from 1 partition on the 2 shards of a running cluster (separate
    mode), and from 3 partitions on 1 shard started on the executors (integrated)."""
    data = interactions(2, explicit=False)
    data.model = puresvd(parameterServerHost=secret_cluster.address).fit(
        frame(secret_spark, data, 1))
    data.integrated = puresvd(numParameterServers=1).fit(frame(secret_spark, data, 3))
    return data


def model_scores(model) -> np.ndarray:
    """The model's score matrix (user factors · item factorsᵀ), float64."""
    s = model.state
    return s.user_factors_ @ s.item_factors_.T


def recommended(frame_, key: str, other: str) -> dict:
    return {r[key]: ([x[other] for x in r.recommendations],
                     [x.rating for x in r.recommendations]) for r in frame_.collect()}


def check_top(got: dict, scores: np.ndarray, allowed: np.ndarray, known: np.ndarray, n: int
              ) -> None:
    """`got` (id -> (targets, ratings)) holds, for each known id, the top n of its row of
    `scores` among the `allowed` targets, best first (compared by score: ties may pick
    either target)."""
    assert sorted(got) == np.flatnonzero(known).tolist()
    for x, (targets, ratings) in got.items():
        row = np.where(allowed[x], scores[x], -np.inf)
        want = np.sort(row)[::-1][:n]
        want = want[np.isfinite(want)]
        assert len(targets) == want.size
        assert allowed[x, targets].all()
        np.testing.assert_allclose(ratings, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(scores[x, targets], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["explicit", "implicit"])
def test_recommendations_are_numpy_puresvd_without_training_items(kind, request):
    data = request.getfixturevalue(kind)
    model = data.model
    np.testing.assert_allclose(model.singularValues, data.s[:RANK], rtol=1e-9)
    np.testing.assert_allclose(model_scores(model), data.scores, atol=1e-5)
    candidates = ~data.seen & data.known_items[None, :]
    users = model.recommendForAllUsers(5)
    assert users.schema.simpleString() == (  # ALS's, int ids
        "struct<user:int,recommendations:array<struct<item:int,rating:float>>>")
    check_top(recommended(users, "user", "item"), data.scores, candidates,
              data.known_users, 5)
    items = model.recommendForAllItems(4)
    assert items.schema.simpleString() == (
        "struct<item:int,recommendations:array<struct<user:int,rating:float>>>")
    check_top(recommended(items, "item", "user"), data.scores.T,
              (~data.seen & data.known_users[:, None]).T, data.known_items, 4)


def test_subsets_recommend_for_the_ids_given(explicit, secret_spark):
    model = explicit.model
    users = secret_spark.createDataFrame([(3.0,), (3.0,), (8.0,), (GAP_USER * 1.0,),
                                          (500.0,)], "user double")
    got = recommended(model.recommendForUserSubset(users, 3), "user", "item")
    assert sorted(got) == [3, 8]  # once each; unknown users get no row, as ALS
    candidates = ~explicit.seen & explicit.known_items[None, :]
    for u, (targets, ratings) in got.items():
        want = np.sort(np.where(candidates[u], explicit.scores[u], -np.inf))[::-1][:3]
        np.testing.assert_allclose(ratings, want, rtol=1e-5)
    items = secret_spark.createDataFrame([(1,), (2,), (GAP_ITEM,)], "item long")
    got = recommended(model.recommendForItemSubset(items, 2), "item", "user")
    assert sorted(got) == [1, 2]
    for i, (targets, ratings) in got.items():
        assert not explicit.seen[targets, i].any()
        want = np.sort(np.where(explicit.seen[:, i] | ~explicit.known_users, -np.inf,
                                explicit.scores[:, i]))[::-1][:2]
        np.testing.assert_allclose(ratings, want, rtol=1e-5)


def test_transform_predicts_numpy_scores_and_cold_start(explicit, secret_spark):
    model = explicit.model
    pairs = [(0, 0), (4, 17), (59, 38), (3, 3),  # known (trained on or not)
             (GAP_USER, 1), (2, GAP_ITEM), (500, 1), (1, 500)]  # unknown ids
    df = secret_spark.createDataFrame([(float(u), i, k) for k, (u, i) in enumerate(pairs)],
                                      "user double, item long, row long")
    out = model.transform(df)
    assert out.schema["user"].dataType.simpleString() == "int"  # as ALS's transform
    got = {r.row: r.prediction for r in out.collect()}
    for k, (u, i) in enumerate(pairs[:4]):
        assert got[k] == pytest.approx(explicit.scores[u, i], rel=1e-5, abs=1e-5)
    assert all(np.isnan(got[k]) for k in range(4, 8))
    dropped = model.copy({model.getParam("coldStartStrategy"): "drop"}).transform(df)
    assert sorted(r.row for r in dropped.collect()) == [0, 1, 2, 3]


def test_rank_col_ranks_among_the_items_not_trained_on(explicit, secret_spark):
    """The rank of a held-out pair's item among its user's candidates (items fit saw
    but the user's training items), by score; null for training pairs and unknown ids."""
    model = explicit.model.copy({explicit.model.getParam("rankCol"): "rank"})
    candidates = ~explicit.seen & explicit.known_items[None, :] & explicit.known_users[:, None]
    u, i = np.nonzero(candidates)
    nulls = [(0, int(np.flatnonzero(explicit.seen[0])[0])), (GAP_USER, 1), (2, GAP_ITEM)]
    df = secret_spark.createDataFrame(pa.table({"user": u[::7], "item": i[::7]}))
    out = model.transform(df.union(secret_spark.createDataFrame(nulls, df.schema))).collect()
    assert len(out) == u[::7].size + 3
    assert all(r["rank"] is None for r in out if (r.user, r.item) in nulls)
    for r in (r for r in out if (r.user, r.item) not in nulls):
        row = np.where(candidates[r.user], explicit.scores[r.user], -np.inf)
        assert r.rank == 1 + (row > row[r.item]).sum()
        assert r.rankCandidates == candidates[r.user].sum()


def test_factors_frames_give_the_scores(explicit):
    model = explicit.model
    assert model.rank == model.getRank() == RANK
    frames = [model.userFactors, model.itemFactors]
    for f in frames:
        assert f.schema.simpleString() == "struct<id:int,features:array<float>>"  # ALS's
    (users, P), (items, V) = ((np.array([r.id for r in rows]), np.array(
        [r.features for r in rows], np.float64)) for rows in (f.orderBy("id").collect()
                                                             for f in frames))
    assert users.tolist() == np.flatnonzero(explicit.known_users).tolist()
    assert items.tolist() == np.flatnonzero(explicit.known_items).tolist()
    np.testing.assert_allclose(P @ V.T, explicit.scores[np.ix_(users, items)], rtol=1e-5,
                               atol=1e-4)


def test_the_same_model_whatever_the_partitions_and_shards(implicit):
    """1 input partition on 2 shards of a running cluster, 3 on 1 integrated shard: Ω is
    seeded by row and TSQR's R has a positive diagonal, so the factors themselves (not
    just the scores) agree to rounding."""
    a, b = implicit.model.state, implicit.integrated.state
    np.testing.assert_allclose(b.singular_values_, a.singular_values_, rtol=1e-12)
    np.testing.assert_allclose(b.item_factors_, a.item_factors_, atol=1e-10)
    np.testing.assert_allclose(b.user_factors_, a.user_factors_, atol=1e-9)


@pytest.mark.parametrize("kind", ["explicit", "implicit"])
def test_equals_local_puresvd_on_the_same_data(kind, request):
    """LocalPureSVD on the Spark frame's rows. It numbers the ids in its own order, so
    its Ω is another (its rows are seeded by row): the two agree within their distance
    to the exact SVD, not to rounding."""
    data = request.getfixturevalue(kind)
    values = () if data.frame_values is None else (data.frame_values,)
    local = LocalPureSVD(rank=RANK, oversample=OVERSAMPLE, power_iter=POWER_ITER,
                         show_progress=False).fit(
        (data.frame_users, data.frame_items, *values))
    users, items = np.flatnonzero(data.known_users), np.flatnonzero(data.known_items)
    grid_u, grid_i = np.repeat(users, items.size), np.tile(items, users.size)
    np.testing.assert_allclose(local.predict(grid_u, grid_i),
                               model_scores(data.model)[grid_u, grid_i], atol=1e-5)
    np.testing.assert_allclose(local.singular_values_, data.model.singularValues, rtol=1e-9)


def test_save_and_load_give_the_same_model(explicit, secret_spark, tmp_path):
    model = explicit.model
    model.save(str(tmp_path / "m"))
    loaded = PureSVDModel.load(str(tmp_path / "m"))
    assert loaded.uid == model.uid and loaded.rank == RANK
    assert loaded.history == model.history and len(model.history) == 2 * (POWER_ITER + 1) + 1
    np.testing.assert_array_equal(loaded.singularValues, model.singularValues)
    np.testing.assert_array_equal(model_scores(loaded), model_scores(model))
    assert (recommended(loaded.recommendForAllUsers(3), "user", "item")
            == recommended(model.recommendForAllUsers(3), "user", "item"))


def test_a_model_built_empty_says_what_makes_one_and_sets_its_columns():
    """As pyspark.ml builds models to copy them: ALSModel's column setters, and a
    ConfigError (not an AttributeError on None) for what only fit or load gives."""
    m = PureSVDModel()
    with pytest.raises(ConfigError, match="PureSVD.fit or PureSVDModel.load makes one"):
        m.singularValues
    for name in ("userCol", "itemCol", "predictionCol", "coldStartStrategy", "rankCol"):
        cap = name[0].upper() + name[1:]
        assert getattr(m, f"set{cap}")("chosen") is m and getattr(m, f"get{cap}")() == "chosen"


@pytest.mark.parametrize("bad, match", [
    ({"rank": 0}, "rank"), ({"powerIter": -1}, "powerIter"),
    ({"coldStartStrategy": "zero"}, "coldStartStrategy"), ({"ratingCol": "score"}, "ratingCol"),
    ({"userCol": "name"}, "userCol"), ({"parameterServerHost": "nowhere"},
                                       "parameterServerHost")])
def test_bad_params_and_columns_are_refused_before_any_job(secret_spark, bad, match):
    df = secret_spark.createDataFrame([(0, 0, 1.0, "x")],
                                      "user long, item long, rating double, name string")
    tracker = secret_spark.sparkContext.statusTracker()
    before = len(tracker.getJobIdsForGroup(None))
    with pytest.raises(ConfigError, match=match):
        PureSVD(**bad).fit(df)
    assert len(tracker.getJobIdsForGroup(None)) == before


@pytest.mark.parametrize("rows, params, match", [
    ([(0.5, 0.0, 1.0)], {}, "integers"), ([(-1.0, 0.0, 1.0)], {}, ">= 0"),
    ([(0.0, None, 1.0)], {}, "nulls"),
    ([(0.0, 0.0, float("nan"))], {"ratingCol": "rating"}, "ratingCol"),
    ([(0.0, 0.0, 1.0), (1.0, 2.0, 1.0)], {"rank": 3}, "rank = 3")])  # 2 users
def test_bad_data_is_refused_before_any_pass(secret_spark, rows, params, match):
    df = secret_spark.createDataFrame(rows, "user double, item double, rating double")
    with pytest.raises(ConfigError, match=match):
        PureSVD(numParameterServers=1, **params).fit(df)

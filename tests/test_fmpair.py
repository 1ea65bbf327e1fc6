"""FMPair on the parameter server equals a plain numpy implementation of the same math
(one worker, one batch in flight), for BPR, crossbatch-BPR and WARP, with AdaGrad and
AdaBatch, over 1, 2 and 3 column partitions; and it learns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from psframework import AsyncClient, ConfigError, RemoteError, ShapeError, run
from models.fmpair import LocalFMPair, losses
from models.fmpair.features import FeatureSpace
from models.fmpair.sampling import NegativeSampler
from models.fmpair.worker import Trainer
from models.metrics import evaluate
from models.synthetic import make_synthetic, popularity_scores

CONFIG = {"dims": 6, "step_size": 0.1, "linear_reg": 0.01, "factors_reg": 0.02, "seed": 3}


# -- the reference: written from the model's definition, not from the plugin ------------------
def reference_epoch(v, w, acc_v, acc_w, space, batches, loss, n_items, cfg, adagrad):
    """Apply the recorded batches to (v, w) in numpy, one example and feature at a time."""
    nu = space.item_offset
    for batch in batches:
        bags_u = [list(zip(space.user[u].indices, space.user[u].data)) for u in batch.users]
        item_ids = np.concatenate([batch.items, batch.candidates.ravel()]) \
            if batch.candidates is not None else batch.items
        bags_i = [[(nu + f, x) for f, x in zip(space.item[i].indices, space.item[i].data)]
                  for i in item_ids]
        su = np.array([sum(x * v[f] for f, x in bag) for bag in bags_u])
        si = np.array([sum(x * v[f] for f, x in bag) for bag in bags_i])
        li = np.array([sum(x * w[f] for f, x in bag) for bag in bags_i])
        pairs = batch.pairs
        score = np.array([[su[b] @ si[n] + li[n] for n in row] for b, row in enumerate(pairs)])
        coef = np.zeros_like(score)
        for b in range(len(pairs)):
            if loss == "bpr":
                ok = [m for m in range(pairs.shape[1] - 1) if batch.valid[b, m]]
                for m in ok:
                    g = 1 / (1 + math.exp(score[b, 0] - score[b, 1 + m])) / len(ok)
                    coef[b, 0] += g
                    coef[b, 1 + m] -= g
                continue
            # WARP as LightFM defines it (lyst/lightfm, lightfm/_lightfm_fast.pyx.template,
            # fit_warp and warp_update): candidates are drawn one at a time and `sampled`
            # counts every draw; the first scoring above the positive's score minus 1 that
            # is not one of the user's positives gets weight
            # log(max(1, floor((n_items - 1) / sampled))), capped at MAX_LOSS = 10 (which
            # binds only beyond e**10 items), and only the user, the positive and that
            # negative take a step; no violation among the draws, no update. A candidate
            # the sampler rejected plays LightFM's drawn positive: a draw, never a violation.
            for sampled in range(1, pairs.shape[1]):  # candidate `sampled` is column `sampled`
                if score[b, sampled] > score[b, 0] - 1 and batch.valid[b, sampled - 1]:
                    weight = min(math.log(max(1.0, math.floor((n_items - 1) / sampled))), 10.0)
                    coef[b, 0], coef[b, sampled] = weight, -weight
                    break
        grad_v, count_v, grad_w, count_w = {}, {}, {}, {}
        for b, row in enumerate(pairs):  # only bags that received a gradient take a step
            if not coef[b].any():
                continue
            d_user = sum(coef[b, m] * si[n] for m, n in enumerate(row))
            for f, x in bags_u[b]:
                grad_v[f] = grad_v.get(f, 0) + x * d_user
                count_v[f] = count_v.get(f, 0) + 1
        for n in range(len(bags_i)):
            d_item = sum(coef[b, m] * su[b] for b, row in enumerate(pairs)
                         for m, nn in enumerate(row) if nn == n)
            d_lin = sum(coef[b, m] for b, row in enumerate(pairs) for m, nn in enumerate(row)
                        if nn == n)
            if not any(coef[b, m] for b, row in enumerate(pairs) for m, nn in enumerate(row)
                       if nn == n):
                continue
            for f, x in bags_i[n]:
                grad_v[f] = grad_v.get(f, 0) + x * d_item
                count_v[f] = count_v.get(f, 0) + 1
                grad_w[f] = grad_w.get(f, 0) + x * d_lin
                count_w[f] = count_w.get(f, 0) + 1
        for table, acc, grads, counts, reg in ((v, acc_v, grad_v, count_v, cfg["factors_reg"]),
                                               (w, acc_w, grad_w, count_w, cfg["linear_reg"])):
            for f, g in grads.items():
                g = g - reg * counts[f] * table[f]
                if adagrad:
                    acc[f] += g * g
                    table[f] += cfg["step_size"] * g / np.sqrt(acc[f])
                else:
                    table[f] += cfg["step_size"] * g / counts[f]


class Recorded(losses.Batch):
    candidates = None


@pytest.fixture(scope="module")
def small_data():
    rng = np.random.default_rng(0)
    n_users, n_items = 12, 15
    dense = rng.random((n_users, n_items)) < 0.25
    dense[np.arange(n_users), np.arange(n_users)] = True  # every user has a positive
    train = sp.csr_matrix(dense.astype(np.float32))
    user_side = sp.hstack([sp.identity(n_users), sp.csr_matrix(rng.random((n_users, 3)) < 0.3)])
    item_side = sp.hstack([sp.identity(n_items), 0.5 * sp.csr_matrix(np.eye(4)[rng.integers(0, 4, n_items)])])
    attribute = rng.integers(0, 5, n_items)
    return sp.csr_matrix(train), user_side, item_side, attribute


def train_on_ps(cluster, space, train, sampler_kind, loss, optimizer, attribute, monkeypatch):
    recorded = []
    real_prepare = losses.prepare

    def recording_prepare(users, items, space_, sampler, rng, m, positives=None):
        batch = real_prepare(users, items, space_, sampler, rng, m, positives)
        rec = Recorded(**batch.__dict__)
        if sampler.kind != "crossbatch":  # the sampled negatives, in bag order
            n = users.size
            ids = space_.item.shape[0]
            rec.candidates = _item_ids(batch.item_bags, space_, ids)[n:].reshape(n, m)
        recorded.append(rec)
        return batch
    monkeypatch.setattr(losses, "prepare", recording_prepare)
    cfg = {**CONFIG, "n_features": space.n_features, "optimizer": optimizer}

    async def go():
        async with AsyncClient(cluster.address) as client:
            name = f"ref-{sampler_kind}-{loss}-{optimizer}-{len(cluster.shard_processes)}"
            await client.create_model(name, "fmpair", cfg)
            every = np.arange(space.n_features)
            start = (await client.pull_rows(name, "factors", every),
                     await client.pull_rows(name, "linear", every))
            sampler = NegativeSampler(train, sampler_kind, filter_seen=True, attribute=attribute)
            trainer = Trainer(client, name, space, train, sampler, loss=loss, batch_size=5,
                              num_negatives=3, concurrent_batches=1, seed=11)
            await trainer.epoch(0)
            left = (await client.call(name, "cached"))
            end = (await client.pull_rows(name, "factors", every),
                   await client.pull_rows(name, "linear", every))
            await client.destroy(name)
            return start, end, left
    start, end, left = run(go())
    assert all(args["batches"] == 0 for args, _ in left)  # every cache entry was freed
    return cfg, start, end, recorded


def _item_ids(bags, space, n_items):
    """Recover which item each bag is (items have a one-hot identity column)."""
    indptr, indices, _ = bags
    nu = space.item_offset
    return np.array([indices[indptr[b]:indptr[b + 1]][0] - nu for b in range(indptr.size - 1)])


@pytest.mark.parametrize("shards", [1, 2, 3])
@pytest.mark.parametrize("sampler_kind,loss,optimizer", [
    ("uniform", "bpr", "adagrad"), ("crossbatch", "bpr", "adagrad"),
    ("uniform", "warp", "adagrad"), ("exp", "bpr", "adabatch")])
def test_ps_training_equals_numpy_reference(fresh_cluster, small_data, shards, sampler_kind,
                                            loss, optimizer, monkeypatch):
    train, user_side, item_side, attribute = small_data
    space = FeatureSpace.build(*train.shape, user_side, item_side)
    cluster = fresh_cluster(shards)
    cfg, (v0, w0), (v1, w1), batches = train_on_ps(cluster, space, train, sampler_kind, loss,
                                                   optimizer, attribute, monkeypatch)
    assert len(batches) == math.ceil(train.nnz / 5)
    v, w = v0.astype(np.float64), w0.astype(np.float64)
    acc_v, acc_w = np.ones_like(v), np.ones_like(w)
    reference_epoch(v, w, acc_v, acc_w, space, batches, loss, train.shape[1], cfg,
                    optimizer == "adagrad")
    assert not np.allclose(v, v0)  # it did train
    np.testing.assert_allclose(v1, v, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(w1, w, rtol=2e-4, atol=2e-6)


def test_same_result_over_one_two_and_three_shards(fresh_cluster, small_data, monkeypatch):
    train, user_side, item_side, attribute = small_data
    space = FeatureSpace.build(*train.shape, user_side, item_side)
    ends = [train_on_ps(fresh_cluster(s), space, train, "uniform", "warp", "adagrad",
                        attribute, monkeypatch)[2] for s in (1, 2, 3)]
    for v, w in ends[1:]:
        np.testing.assert_allclose(v, ends[0][0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(w, ends[0][1], rtol=1e-4, atol=1e-6)


def test_lost_batches_expire_and_bad_batches_are_refused(fresh_cluster, small_data):
    train, user_side, item_side, _ = small_data
    space = FeatureSpace.build(*train.shape, user_side, item_side)
    c = fresh_cluster(2).client()
    c.create_model("fm", "fmpair", {**CONFIG, "n_features": space.n_features, "cache_ttl": 0.3})
    users, items = np.array([0, 1]), np.array([2, 3])
    batch = losses.prepare(users, items, space, NegativeSampler(train), np.random.default_rng(0), 1)
    c.call("fm", "dotprod", {"key": 1}, batch.arrays)  # ... and its adjust never comes
    assert [a["batches"] for a, _ in c.call("fm", "cached")] == [1, 1]
    import time
    time.sleep(0.4)
    c.call("fm", "dotprod", {"key": 2}, batch.arrays)  # a later batch sweeps the stale one
    assert [a["batches"] for a, _ in c.call("fm", "cached")] == [1, 1]
    with pytest.raises(RemoteError, match="expired"):
        c.call("fm", "adjust", {"key": 1}, (np.zeros((2, 1), np.float32),), once=True)
    # coefficients of the wrong shape riding on a later dotprod: refused, batch 2 kept
    with pytest.raises(ShapeError, match="must be float32 of shape"):
        c.call("fm", "dotprod", {"key": 3, "adjust": [2]},
               batch.arrays + (np.zeros((2, 5), np.float32),), once=True)
    assert [a["batches"] for a, _ in c.call("fm", "cached")] == [1, 1]
    c.call("fm", "dotprod", {"key": 3, "adjust": [2]},
           batch.arrays + (np.zeros((2, 1), np.float32),), once=True)  # the right shape
    assert [a["batches"] for a, _ in c.call("fm", "cached")] == [1, 1]  # 2 done, 3 waits
    bad = list(batch.arrays)
    bad[1] = bad[1] + 10_000  # a user feature index beyond the model
    with pytest.raises(Exception, match="out of range"):
        c.call("fm", "dotprod", {"key": 4}, tuple(bad))
    with pytest.raises(ConfigError, match="config.dims"):
        c.create_model("fm-bad", "fmpair", {"n_features": 5, "dims": 0})


def test_learns_far_above_popularity_and_side_features_help():
    """Sparse data (5 positives per user): the artist, shared by many items, carries the
    cluster of rarely seen items that their identity feature alone cannot."""
    data = make_synthetic(n_users=500, n_items=700, n_artists=40, interactions_per_user=5,
                          artist_purity=1.0, seed=2)
    pop = evaluate(popularity_scores(data.train), data.test, train=data.train)
    results = {}
    for name, features in (("ids", None), ("artist", data.item_features())):
        model = LocalFMPair(dims=16, loss="warp", epochs=8, step_size=0.1, seed=1,
                            num_shards=2).fit(data.train, item_features=features)
        vectors, bias = model.item_representations()
        scores = model.user_representations() @ vectors.T + bias
        results[name] = evaluate(scores, data.test, train=data.train)
    assert results["ids"]["precision@10"] > 1.8 * pop["precision@10"]
    assert results["ids"]["auc"] > pop["auc"] + 0.05
    assert results["artist"]["auc"] > results["ids"]["auc"] + 0.03
    assert results["artist"]["precision@10"] > results["ids"]["precision@10"]

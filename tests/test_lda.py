"""LDA on the parameter server: the sampler's transitions against the exact collapsed
conditional and the exact posterior of a tiny corpus, the counts on the server against the
workers' assignments, topic recovery on corpora drawn from known topics, the
log-likelihood against a formula written here, the sparse pull, persistence and errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.special import gammaln

from psframework import AsyncClient, Client, ConfigError, LocalCluster, ShapeError, run
from models.lda import LocalLDA, kernels, worker
from models.lda.corpus import tokens
from models.synthetic_topics import make_corpus


def exact_conditional(ndk, nwk_w, nt, V, alpha, beta):
    """p(z = t | rest) ∝ (n_td + α)(n_tw + β) / (n_t + Vβ), counts without the token."""
    p = (ndk + alpha) * (nwk_w + beta) / (nt + V * beta)
    return p / p.sum()


def collapsed_joint(words, z, doc_of, V, K, alpha, beta):
    """log p(w, z) of LDA with symmetric priors, from the assignments (numpy, lgamma)."""
    nwk = np.zeros((V, K))
    np.add.at(nwk, (words, z), 1)
    ndk = np.zeros((doc_of.max() + 1, K))
    np.add.at(ndk, (doc_of, z), 1)
    nt = nwk.sum(0)
    out = K * (gammaln(V * beta) - V * gammaln(beta)) + np.sum(gammaln(nwk + beta))
    out -= np.sum(gammaln(nt + V * beta))
    L = ndk.sum(1)
    out += np.sum(gammaln(K * alpha) - K * gammaln(alpha) - gammaln(L + K * alpha))
    return out + np.sum(gammaln(ndk + alpha))


def best_cosines(learned, true):
    """Cosine similarity of each true topic with its learned match (Hungarian)."""
    a = learned / np.linalg.norm(learned, axis=1, keepdims=True)
    b = true / np.linalg.norm(true, axis=1, keepdims=True)
    cos = a @ b.T
    rows, cols = linear_sum_assignment(-cos)
    return cos[rows, cols]


# -- the sampler's transitions --------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_mh_transition_leaves_the_exact_conditional_invariant(steps):
    """From a state drawn from the exact conditional p, one token's transition of `steps`
    MH cycles (word proposal, then doc) ends in p again, with proposals built from
    counts that differ from the current ones (stale, as a pulled block's are)."""
    rng = np.random.default_rng(7)
    V, K, alpha, beta = 6, 5, 0.3, 0.2
    word_topic = rng.integers(0, 6, (V, K))
    nt = word_topic.sum(0)
    stale = np.maximum(word_topic + rng.integers(-3, 4, (V, K)), 0)
    zd = np.array([0, 1, 1, 4, 2, 1, 3])
    pos, w = 2, 1
    ndk = np.bincount(np.delete(zd, pos), minlength=K)
    p = exact_conditional(ndk, word_topic[w], nt, V, alpha, beta)
    trials = 100_000
    ended = np.zeros(K)
    for s0 in range(K):
        start = zd.copy()
        start[pos] = s0
        out = kernels.mh_transitions(start, pos, w, word_topic, nt, stale,
                                     stale.sum(0) + 2, alpha, beta, steps, trials, 11 + s0)
        ended += p[s0] * out / trials
    se = np.sqrt(p * (1 - p) / trials)
    assert np.all(np.abs(ended - p) < 5 * se + 1e-4), (ended, p)
    # and the chain moves: a transition is not the identity
    moved = kernels.mh_transitions(zd, pos, w, word_topic, nt, stale, stale.sum(0), alpha,
                                   beta, steps, 10_000, 3)
    assert moved[zd[pos]] < 10_000


@pytest.mark.parametrize("sampler", ["exact", "mh"])
def test_sweeps_sample_the_posterior_of_a_tiny_corpus(sampler):
    """Sweeps of the sampler visit the 2^6 assignments of a 6-token corpus as often as
    the posterior p(z | w), enumerated. Exact: one block of two 3-token documents. MH:
    each token a document and a block of its own, its proposals pulled just before it is
    sampled (no staleness); within a block, proposals from counts pulled at its start
    make MH approximate (docs/lda.md has the numbers)."""
    V, K, alpha, beta = 3, 2, 0.5, 0.3
    words = np.array([0, 1, 2, 2, 2, 1], np.int64)
    doc_of = np.repeat([0, 1], 3) if sampler == "exact" else np.arange(6)
    configs = list(itertools.product(range(K), repeat=6))
    logp = np.array([collapsed_joint(words, np.array(c), doc_of, V, K, alpha, beta)
                     for c in configs])
    posterior = np.exp(logp - logp.max())
    posterior /= posterior.sum()
    index = {c: i for i, c in enumerate(configs)}
    doc_ptr = np.searchsorted(doc_of, np.arange(doc_of.max() + 2)).astype(np.int64)
    blocks = [(0, doc_of.max() + 1)] if sampler == "exact" else [(d, d + 1) for d in range(6)]
    z = np.zeros(6, np.int64)
    visits = np.zeros(len(configs))
    row_ptr = np.arange(0, V * K + 1, K, dtype=np.int64)
    row_topics = np.tile(np.arange(K, dtype=np.int32), V)
    seed = 0
    for sweep in range(30_000):
        for a, b in blocks:
            nwk = np.zeros((V, K), np.int64)
            np.add.at(nwk, (words, z), 1)
            t0, t1 = doc_ptr[a], doc_ptr[b]
            kernels.sample_block(doc_ptr[a:b + 1] - t0, words[t0:t1], z[t0:t1], row_ptr,
                                 row_topics, nwk.ravel().astype(np.int32), nwk.sum(0), V,
                                 alpha, beta, 2, sampler == "exact", False, seed,
                                 np.empty((0, 4), np.int32))
            seed += 1
        visits[index[tuple(z)]] += 1
    visits /= visits.sum()
    assert 0.5 * np.abs(visits - posterior).sum() < 0.03


# -- the model on the server ------------------------------------------------------------------
def small_corpus(n_docs=300, seed=0, **kw):
    kw = {"vocabulary": 300, "topics": 6, "doc_length": 60, **kw}
    return make_corpus(n_docs, seed=seed, **kw)


def test_exact_sampler_on_the_server_is_sequential_collapsed_gibbs():
    """One worker with the exact sampler is collapsed Gibbs sampling, token after token:
    a plain-Python sampler written here, fed the same uniforms (numba's generator is
    NumPy's Mersenne Twister; the worker seeds each block by [seed, worker, iteration,
    block]), ends in the same assignments through the server's pulls and pushes."""
    corpus = make_corpus(40, vocabulary=30, topics=3, doc_length=15, seed=5)
    K, alpha, beta, seed, iterations = 4, 0.2, 0.05, 7, 5
    model = LocalLDA(k=K, alpha=alpha, beta=beta, iterations=iterations, sampler="exact",
                     num_workers=1, seed=seed, show_progress=False).fit(corpus.docs)
    t = tokens(corpus.docs)
    V, N = t.vocabulary, t.words.size
    doc_of = np.repeat(np.arange(t.documents), np.diff(t.doc_ptr))
    z = np.random.default_rng([seed, 0]).integers(0, K, N)
    nwk, ndk = np.zeros((V, K), np.int64), np.zeros((t.documents, K), np.int64)
    np.add.at(nwk, (t.words, z), 1)
    np.add.at(ndk, (doc_of, z), 1)
    nt = nwk.sum(0)
    for it in range(iterations):
        uniform = np.random.RandomState(
            np.random.SeedSequence([seed, 0, it, 0]).generate_state(1)[0])
        for i in range(N):
            w, d, s = t.words[i], doc_of[i], z[i]
            nwk[w, s] -= 1
            ndk[d, s] -= 1
            nt[s] -= 1
            cdf, total = [], 0.0
            for k in range(K):
                total += (ndk[d, k] + alpha) * ((nwk[w, k] + beta) / (nt[k] + V * beta))
                cdf.append(total)
            u = uniform.random_sample() * total
            s = next((k for k in range(K - 1) if cdf[k] > u), K - 1)
            z[i] = s
            nwk[w, s] += 1
            ndk[d, s] += 1
            nt[s] += 1
    assert np.array_equal(np.concatenate(model.assignments_), z)
    assert np.array_equal(model.components_, nwk.T + beta)


def test_counts_on_the_server_equal_the_workers_assignments_after_every_iteration():
    corpus = small_corpus()
    X = corpus.docs
    V, K = X.shape[1], 6
    checked = []
    with LocalCluster(3, processes=False) as cluster, Client(cluster.address) as client:
        def check(iteration, entry):
            z = np.concatenate(model.assignments_)
            words = tokens(X).words
            expected = np.zeros((V, K), np.int64)
            np.add.at(expected, (words, z), 1)
            on_server = client.pull_rows("lda-counts", "word_topic", np.arange(V))
            totals = client.pull_rows("lda-counts", "topic_totals", np.arange(K))
            assert np.array_equal(on_server, expected)
            assert np.array_equal(totals, np.bincount(z, minlength=K))
            checked.append(iteration)
        model = LocalLDA(k=K, iterations=4, num_workers=2, master=cluster.address,
                         name="lda-counts", show_progress=False, callback=check)
        # blocks of ~500 tokens: each worker pulls and pushes many times per sweep
        old = worker.BLOCK_TOKENS
        worker.BLOCK_TOKENS = 500
        try:
            model.fit(X)
        finally:
            worker.BLOCK_TOKENS = old
        assert checked == [0, 1, 2, 3]
        assert len(model._workers[0].blocks) > 5
        client.destroy("lda-counts")


def recoverable():
    """Five topics, 500 documents of ~100 tokens: collapsed Gibbs can stall in a local
    optimum (a topic split in two, two merged) on harder corpora; on this one every
    sampler recovered every topic in 16 of 16 seeds."""
    return make_corpus(500, vocabulary=300, topics=5, doc_length=100, alpha=0.5, seed=3)


def test_one_worker_is_deterministic_over_many_blocks(monkeypatch):
    """Block b's push waits for block b + 1's pull: what each pull sees does not depend on
    timing, so two fits of one worker agree exactly."""
    monkeypatch.setattr(worker, "BLOCK_TOKENS", 300)
    corpus = small_corpus(n_docs=60)
    fits = [LocalLDA(k=5, iterations=4, num_workers=1, seed=3, show_progress=False)
            .fit(corpus.docs) for _ in range(2)]
    assert len(fits[0]._workers[0].blocks) > 5
    assert np.array_equal(fits[0].word_topic_counts_, fits[1].word_topic_counts_)
    assert all(np.array_equal(a, b) for a, b in zip(fits[0].assignments_, fits[1].assignments_))


@pytest.mark.parametrize("sampler", ["exact", "mh"])
def test_topics_drawn_from_known_topics_are_recovered(sampler):
    corpus = recoverable()
    model = LocalLDA(k=5, iterations=60, sampler=sampler, num_workers=1, seed=1,
                     show_progress=False).fit(corpus.docs)
    assert best_cosines(model.topic_word_, corpus.topic_word).min() > 0.95
    # the documents' mixtures too: fold-in recovers θ of the training documents
    theta = model.transform(corpus.docs)
    order = linear_sum_assignment(-(model.topic_word_ @ corpus.topic_word.T))[1]
    assert np.abs(theta - corpus.doc_topic[:, order]).mean() < 0.05


def test_two_workers_recover_the_topics_too():
    corpus = recoverable()
    model = LocalLDA(k=5, iterations=60, num_workers=2, seed=2,
                     show_progress=False).fit(corpus.docs)
    assert best_cosines(model.topic_word_, corpus.topic_word).min() > 0.95


def test_log_likelihood_equals_the_collapsed_joint_of_the_assignments():
    corpus = small_corpus(n_docs=100)
    entries = []
    model = LocalLDA(k=6, iterations=5, alpha=0.3, beta=0.05, num_workers=2, evaluate_every=2,
                     show_progress=False,
                     callback=lambda it, e: entries.append((e, np.concatenate(
                         [z.copy() for z in model.assignments_]))))
    model.fit(corpus.docs)
    t = tokens(corpus.docs)
    doc_of = np.repeat(np.arange(t.documents), np.diff(t.doc_ptr))
    for entry, z in entries:
        assert entry["log_likelihood"] == pytest.approx(
            collapsed_joint(t.words, z, doc_of, t.vocabulary, 6, 0.3, 0.05), rel=1e-9)
    assert [e["perplexity"] is None for e, _ in entries] == [True, False, True, False, True]
    assert entries[-1][0]["log_likelihood"] > entries[0][0]["log_likelihood"]
    assert 1 < entries[-2][0]["perplexity"] < t.vocabulary


def test_sparse_pull_equals_the_dense_rows(monkeypatch):
    """pull_sparse reassembles the nonzeros of rows asked in any order from cyclic
    partitions, over several requests per partition."""
    rng = np.random.default_rng(0)
    V, K = 50, 7
    dense = rng.integers(-1, 3, (V, K)) * (rng.random((V, K)) < 0.4)
    rows = rng.permutation(V)[:30]
    monkeypatch.setattr(worker, "REPLY_BYTES", 8 * K * 3)  # 3 rows a request

    async def go(address):
        async with AsyncClient(address) as c:
            await c.create_model("sparse", "lda", {"vocabulary": V, "k": K, "beta": 0.1})
            keys = np.flatnonzero(dense)
            await c.push("sparse", "word_topic", keys // K, keys % K,
                         dense.ravel()[keys].astype(np.int32))
            return await worker.pull_sparse(c, "sparse", rows)
    with LocalCluster(3, processes=False) as cluster:
        indptr, topics, counts = run(go(cluster.address))
    got = np.zeros((rows.size, K), np.int64)
    got[np.repeat(np.arange(rows.size), np.diff(indptr)), topics] = counts
    assert np.array_equal(got, dense[rows])


# -- the local API ------------------------------------------------------------------------------
def test_save_load_and_the_fitted_model():
    corpus = small_corpus(n_docs=120)
    docs = corpus.tokens()
    V = max(int(d.max()) for d in docs) + 1  # a list's vocabulary: its largest id + 1
    model = LocalLDA(k=6, iterations=10, show_progress=False).fit(docs)
    assert model.topic_word_.shape == (6, V)
    assert np.allclose(model.topic_word_.sum(1), 1)
    assert np.allclose(model.doc_topic_.sum(1), 1) and model.doc_topic_.shape == (120, 6)
    top = model.top_words(5)
    assert all(row == list(np.argsort(-phi, kind="stable")[:5])
               for row, phi in zip(top, model.topic_word_))
    names = [f"w{i}" for i in range(V)]
    assert model.top_words(2, names)[0] == [names[i] for i in top[0][:2]]
    # fitted on token lists or on the count matrix: the same documents
    again = LocalLDA(k=6, iterations=10, show_progress=False).fit(corpus.docs[:, :V])
    assert np.array_equal(again.components_, model.components_)
    path = "/tmp/psf-lda-test.npz"
    model.save(path)
    loaded = LocalLDA.load(path)
    assert np.array_equal(loaded.topic_word_, model.topic_word_)
    assert np.array_equal(loaded.transform(docs[:10]), model.transform(docs[:10]))
    assert loaded.history_ == model.history_ and loaded.get_params() == model.get_params()
    assert loaded.perplexity(docs) == model.perplexity(docs)
    with pytest.raises(ConfigError, match="training assignments"):
        loaded.doc_topic_


def test_perplexity_of_the_learned_topics_beats_uniform_and_matches_numpy():
    corpus = small_corpus(n_docs=200)
    model = LocalLDA(k=6, iterations=30, show_progress=False).fit(corpus.docs)
    X = corpus.docs
    theta = model.transform(X)
    # numpy: exp(-Σ_d Σ_w n_dw log (θ_d · φ_w) / N)
    logp = np.log(theta @ model.topic_word_)
    expected = math.exp(-np.sum(X.multiply(logp).sum()) / X.sum())
    assert model.perplexity(X) == pytest.approx(expected, rel=1e-9)
    assert model.perplexity(X) < 0.5 * X.shape[1]


def test_bad_input_is_refused_with_what_to_do():
    with pytest.raises(ConfigError, match="integers >= 0"):
        LocalLDA(show_progress=False).fit(sp.csr_matrix(np.array([[0.5, 1.0]])))
    with pytest.raises(ConfigError, match="1-d array of int word ids"):
        LocalLDA(show_progress=False).fit([["a", "b"]])
    with pytest.raises(ConfigError, match="negative"):
        LocalLDA(show_progress=False).fit([np.array([1, -2])])
    with pytest.raises(ConfigError, match="no tokens"):
        LocalLDA(show_progress=False).fit(sp.csr_matrix((3, 5), dtype=np.int64))
    with pytest.raises(ConfigError, match="sampler"):
        LocalLDA(sampler="gibbs", show_progress=False).fit([np.array([1, 2])])
    with pytest.raises(ConfigError, match="not fitted"):
        LocalLDA().transform([np.array([1])])
    model = LocalLDA(k=2, iterations=2, show_progress=False).fit([np.array([0, 1, 2, 1])])
    with pytest.raises(ShapeError, match="vocabulary"):
        model.transform(sp.csr_matrix(np.ones((1, 5))))
    with pytest.raises(ShapeError, match="outside the model's vocabulary"):
        model.transform([np.array([7])])


def test_the_plugin_refuses_bad_configs(client):
    for config, bad in [({"vocabulary": 0, "k": 2, "beta": 0.1}, "vocabulary"),
                        ({"vocabulary": 5, "k": 2.5, "beta": 0.1}, "k"),
                        ({"vocabulary": 5, "k": 2, "beta": 0}, "beta")]:
        with pytest.raises(ConfigError, match=bad):
            client.create_model("bad-lda", "lda", config)

"""The LDA sampler's numba kernels: one call samples a block of documents.

A block's view of the model (what the worker pulled before sampling it):
- `row_ptr`, `row_topics`, `row_counts`: the nonzero word-topic counts n̂_wk of the block's
  words, word `lw` (an index into the block's vocabulary) in row_ptr[lw]..row_ptr[lw+1];
- `nt`: the topic totals n̂_k, updated in place while the block samples.

`sample_block` turns these into its working state: per word a small open-addressing table
of its topics' counts, the pulled (stale) value beside the current one, so a lookup costs
O(1) whatever K is (`_table`); per word an alias table over its nonzero topics, plus one
shared alias table over all K topics for the smoothing mass β / (n̂_k + Vβ) (Li et al.'s
"sparse + dense" split of the word proposal), built once per block.

Per token, after removing it from the counts (the "-di" counts), `mh_steps` Metropolis-
Hastings cycles of the two proposals of LightLDA (Yuan et al. 2015), as Glint's LDA, each a
word step then a doc step:
- word proposal q_w(t) ∝ (n̂_tw + β) / (n̂_t + Vβ), from the pulled counts without the
  token itself (its own pulled count taken out by a rejection step: a rare word's proposal
  would otherwise be mostly its own current topic); accepted with
  min(1, p(t) q_w(s) / (p(s) q_w(t))), p the exact collapsed conditional
  p(t) ∝ (n_td + α)(n_tw + β) / (n_t + Vβ) on the current counts;
- doc proposal: a random token of the document (its topic; the current token counts with
  its current state) with probability L / (L + Kα), else a uniform topic, i.e.
  q(t | s) ∝ n_td^-di + [t = s] + α; the doc factors cancel and the acceptance is
  min(1, (n_tw + β)(n_s + Vβ) / ((n_sw + β)(n_t + Vβ))).
Each step is an exact MH step for p whatever the pulled counts are, so p is invariant
(tests/test_lda.py checks it empirically); the cost per token does not grow with K. What
is approximate is the sweep: a block's proposals come from counts pulled at its start, so
later tokens propose from their block's earlier topics (LightLDA's delayed update).
`sampler="exact"` draws from p directly in O(K), the reference.

Counts that a stale view sees below zero are read as zero. Everything is deterministic
given the block's seed (numba's generator, seeded per call on the calling thread).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["sample_block", "mh_transitions", "table_layout"]

_EMPTY = -1


# -- the block's counts: per word, a small open-addressing table topic -> (current, pulled)
# All words' tables live in one int32 array `tab` of rows (topic or _EMPTY, current count,
# pulled count, unused): 16 bytes a slot. Word lw owns rows start[lw]..start[lw + 1], a
# power of two at most half full, so a frequent word's slots stay together (and in cache)
# and a rare word's take a cache line or two; a lookup costs O(1) whatever K is.
@numba.njit(inline="always")
def _slot(tab, start, shift, mask, t):
    """The row of topic t in a word's table (start, shift, mask), or the empty row where
    it goes."""
    h = ((t * 0x9E3779B1) & 0xFFFFFFFF) >> shift
    while tab[start + h, 0] != _EMPTY and tab[start + h, 0] != t:
        h = (h + 1) & mask
    return start + h


@numba.njit(inline="always")
def _probe(tab, start, shift, mask, t):
    """(row, current count, pulled count) of topic t; an absent topic's counts are 0."""
    h = _slot(tab, start, shift, mask, t)
    if tab[h, 0] == t:
        return h, tab[h, 1], tab[h, 2]
    return h, 0, 0


@numba.njit(cache=True)
def table_layout(row_ptr, word_tokens):
    """Where each word's table starts (words + 1 int64) and its hash shift: room for its
    pulled topics and one new topic per token of it in the block, at most half full."""
    words = row_ptr.size - 1
    start = np.zeros(words + 1, np.int64)
    shift = np.empty(words, np.int64)
    for lw in range(words):
        need = 2 * (row_ptr[lw + 1] - row_ptr[lw] + word_tokens[lw])
        bits = 2
        while (1 << bits) < need:
            bits += 1
        start[lw + 1] = start[lw] + (1 << bits)
        shift[lw] = 32 - bits
    return start, shift


@numba.njit(nogil=True, cache=True)
def _table(row_ptr, row_topics, row_counts, word_tokens, scratch):
    """The block's tables of the pulled counts (`table_layout`), in `scratch` (rows × 4
    int32) when it is large enough (reused memory costs no page faults), else in new
    memory. Returns (tab, start, shift)."""
    start, shift = table_layout(row_ptr, word_tokens)
    size = start[-1]
    tab = scratch[:size] if scratch.shape[0] >= size else np.empty((size, 4), np.int32)
    for h in range(size):
        tab[h, 0] = _EMPTY
        tab[h, 1] = 0
        tab[h, 2] = 0
    for lw in range(row_ptr.size - 1):
        mask = start[lw + 1] - start[lw] - 1
        for j in range(row_ptr[lw], row_ptr[lw + 1]):
            h = _slot(tab, start[lw], shift[lw], mask, row_topics[j])
            tab[h, 0] = row_topics[j]
            tab[h, 1] += row_counts[j]
            tab[h, 2] += row_counts[j]
    return tab, start, shift


# -- alias tables (Walker / Vose) ---------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _alias(weights, prob, alias, small, large):
    """Fill prob/alias (same length as weights, total > 0) for O(1) draws ∝ weights;
    small/large: scratch of at least that length."""
    n = weights.size
    total = 0.0
    for i in range(n):
        total += weights[i]
    ns = 0
    nl = 0
    for i in range(n):
        prob[i] = weights[i] * n / total
        if prob[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        g = large[nl - 1]
        alias[s] = g
        prob[g] = prob[g] + prob[s] - 1.0
        if prob[g] < 1.0:
            nl -= 1
            small[ns] = g
            ns += 1
    for i in range(nl):
        prob[large[i]] = 1.0
        alias[large[i]] = large[i]
    for i in range(ns):
        prob[small[i]] = 1.0
        alias[small[i]] = small[i]


@numba.njit(inline="always")
def _draw(prob, alias, start, n):
    u = np.random.random() * n
    i = min(int(u), n - 1)
    return start + i if u - i < prob[start + i] else start + alias[start + i]


# -- the block's proposals ----------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _proposals(row_ptr, row_topics, row_counts, nt, K, vbeta, beta):
    """Alias tables of the word proposal from the pulled counts: per word over its nonzero
    topics, weights max(n̂_tw, 0) / (n̂_t + Vβ), with their sum S_w; and one over all K
    topics, weights β / (n̂_t + Vβ), with its sum B."""
    nnz = row_topics.size
    sprob = np.empty(nnz, np.float64)
    salias = np.empty(nnz, np.int64)
    smass = np.zeros(row_ptr.size - 1, np.float64)
    most = K
    for lw in range(row_ptr.size - 1):
        most = max(most, row_ptr[lw + 1] - row_ptr[lw])
    weights = np.empty(most, np.float64)
    small = np.empty(most, np.int64)
    large = np.empty(most, np.int64)
    for lw in range(row_ptr.size - 1):
        a, b = row_ptr[lw], row_ptr[lw + 1]
        if b == a:
            continue
        total = 0.0
        for j in range(a, b):
            w = max(row_counts[j], 0) / (max(nt[row_topics[j]], 0) + vbeta)
            weights[j - a] = w
            total += w
        smass[lw] = total
        if total > 0:
            _alias(weights[:b - a], sprob[a:b], salias[a:b], small, large)
    dprob = np.empty(K, np.float64)
    dalias = np.empty(K, np.int64)
    dmass = 0.0
    for k in range(K):
        weights[k] = beta / (max(nt[k], 0) + vbeta)
        dmass += weights[k]
    _alias(weights[:K], dprob, dalias, small, large)
    return sprob, salias, smass, dprob, dalias, dmass


@numba.njit(inline="always")
def _stale_weight(tab, start, shift, mask, nt0, k, s0, beta, vbeta):
    """The word proposal's unnormalised q_w(k) = (n̂_kw + β) / (n̂_k + Vβ), from the pulled
    counts without the token (pulled in topic s0; s0 = -1: as pulled)."""
    own = k == s0
    _, _, pulled = _probe(tab, start, shift, mask, k)
    return (max(pulled - own, 0) + beta) / (max(nt0[k] - own, 0) + vbeta)


@numba.njit(inline="always")
def _word_draw(lw, K, s0, own_with, own_without, tab, start, shift, mask, nt0, row_ptr,
               row_topics, sprob, salias, smass, dprob, dalias, dmass, beta, vbeta):
    """A draw from the word proposal of a token pulled in topic s0, whose weight in the
    alias tables is own_with and without the token own_without. Only topic s0 differs
    between the two, so a draw of s0 is kept with probability own_without / own_with,
    else drawn again. When the token is most of its word's weight (a rare word), an O(K)
    draw."""
    total = smass[lw] + dmass
    if own_with - own_without < 0.75 * total:
        keep = own_without / own_with
        for _ in range(64):
            if np.random.random() * total < smass[lw]:
                t = row_topics[_draw(sprob, salias, row_ptr[lw], row_ptr[lw + 1] - row_ptr[lw])]
            else:
                t = _draw(dprob, dalias, 0, K)
            if t != s0 or np.random.random() < keep:
                return t
    u = np.random.random() * (total - own_with + own_without)
    for k in range(K):
        u -= _stale_weight(tab, start, shift, mask, nt0, k, s0, beta, vbeta)
        if u < 0:
            return k
    return K - 1


@numba.njit(inline="always")
def _mh(s, h, lw, K, zd, pos, ndk, tab, start, shift, mask, nt, nt0, row_ptr, row_topics,
        sprob, salias, smass, dprob, dalias, dmass, alpha, beta, vbeta, steps):
    """`steps` MH cycles (a word proposal, then a doc proposal: LightLDA's mh_step) for the
    token at zd[pos], pulled (and now) in topic s, whose row in its word's table is h,
    with the current counts without it; zd[pos] follows the state, as the doc proposal
    needs. Returns the new state and its row. Each topic's counts are probed once: the
    state's are kept."""
    L = zd.size
    s0 = s
    # the state's weights: in p (current counts) and in the word proposal (pulled, without
    # the token)
    pulled = tab[h, 2]
    own_with = (max(pulled, 0) + beta) / (max(nt0[s0], 0) + vbeta)
    own_without = (max(pulled - 1, 0) + beta) / (max(nt0[s0] - 1, 0) + vbeta)
    p_s = (max(tab[h, 1], 0) + beta) / (max(nt[s], 0) + vbeta)
    q_s = own_without
    for step in range(2 * steps):
        if step % 2 == 0:  # word proposal: independent of the token's state
            t = _word_draw(lw, K, s0, own_with, own_without, tab, start, shift, mask, nt0,
                           row_ptr, row_topics, sprob, salias, smass, dprob, dalias, dmass,
                           beta, vbeta)
        else:  # doc proposal
            u = np.random.random() * (L + K * alpha)
            if u < L:
                t = zd[min(int(u), L - 1)]
            else:
                t = min(int((u - L) / alpha), K - 1)
        if t == s:
            continue
        ht, c, o = _probe(tab, start, shift, mask, t)
        p_t = (max(c, 0) + beta) / (max(nt[t], 0) + vbeta)
        own = t == s0
        q_t = (max(o - own, 0) + beta) / (max(nt0[t] - own, 0) + vbeta)
        if step % 2 == 0:
            ratio = (ndk[t] + alpha) * p_t * q_s / ((ndk[s] + alpha) * p_s * q_t)
        else:  # the doc factors cancel with the proposal's
            ratio = p_t / p_s
        if ratio >= 1.0 or np.random.random() < ratio:
            s, h, p_s, q_s = t, ht, p_t, q_t
            zd[pos] = t
    return s, h


@numba.njit(inline="always")
def _exact(K, ndk, tab, start, shift, mask, nt, alpha, beta, vbeta, cdf):
    total = 0.0
    for t in range(K):
        _, c, _ = _probe(tab, start, shift, mask, t)
        total += (ndk[t] + alpha) * ((max(c, 0) + beta) / (max(nt[t], 0) + vbeta))
        cdf[t] = total
    u = np.random.random() * total
    t = 0
    while t < K - 1 and cdf[t] <= u:
        t += 1
    return t


@numba.njit(nogil=True, cache=True)
def sample_block(doc_ptr, words, z, row_ptr, row_topics, row_counts, nt, V, alpha, beta,
                 mh_steps, exact, evaluate, seed, scratch):
    """Sample every token of a block once, in order, updating `z` and `nt` in place.

    doc_ptr: the block's documents as token ranges of `words` (the block's word index of
    each token) and `z` (its topic). Returns (moved_words, moved_from, moved_to,
    doc_loglik, token_loglik): the tokens whose topic changed (block word index, old,
    new), the documents' part of the collapsed log-likelihood (Σ_d log Γ(Kα) - log Γ(L_d +
    Kα) + Σ_k log Γ(n_dk + α) - log Γ(α), after sampling), and, with `evaluate`, Σ log p(w
    | d) over the block's tokens with θ_d from the doc's counts after sampling and φ from
    the pulled counts (the training perplexity's numerator; else 0). scratch: memory for
    the counts' tables (`_table`)."""
    np.random.seed(seed)
    K = nt.size
    vbeta = V * beta
    n_tokens = words.size
    word_tokens = np.zeros(row_ptr.size - 1, np.int64)
    for i in range(n_tokens):
        word_tokens[words[i]] += 1
    tab, start, shift = _table(row_ptr, row_topics, row_counts, word_tokens, scratch)
    nt0 = nt.copy()
    sprob, salias, smass, dprob, dalias, dmass = _proposals(row_ptr, row_topics, row_counts,
                                                            nt0, K, vbeta, beta)
    ndk = np.zeros(K, np.int64)
    cdf = np.empty(K if exact else 1, np.float64)
    seen = np.zeros(K, np.bool_)
    doc_topics = np.empty(K, np.int64)
    moved_w = np.empty(n_tokens, np.int64)
    moved_from = np.empty(n_tokens, np.int64)
    moved_to = np.empty(n_tokens, np.int64)
    moved = 0
    doc_ll = 0.0
    token_ll = 0.0
    lg_alpha = math.lgamma(alpha)
    for d in range(doc_ptr.size - 1):
        a, b = doc_ptr[d], doc_ptr[d + 1]
        zd = z[a:b]
        for i in range(a, b):
            ndk[z[i]] += 1
        for i in range(a, b):
            lw = words[i]
            ws, wshift, wmask = start[lw], shift[lw], start[lw + 1] - start[lw] - 1
            s0 = z[i]
            ndk[s0] -= 1
            h = _slot(tab, ws, wshift, wmask, s0)  # present: the pulled counts hold the token
            tab[h, 0] = s0
            tab[h, 1] -= 1
            nt[s0] -= 1
            if exact:
                s = _exact(K, ndk, tab, ws, wshift, wmask, nt, alpha, beta, vbeta, cdf)
                h = _slot(tab, ws, wshift, wmask, s)
            else:
                s, h = _mh(s0, h, lw, K, zd, i - a, ndk, tab, ws, wshift, wmask, nt, nt0,
                           row_ptr, row_topics, sprob, salias, smass, dprob, dalias, dmass,
                           alpha, beta, vbeta, mh_steps)
            z[i] = s
            ndk[s] += 1
            tab[h, 0] = s  # the row _slot found: the topic's, or where it goes
            tab[h, 1] += 1
            nt[s] += 1
            if s != s0:
                moved_w[moved] = lw
                moved_from[moved] = s0
                moved_to[moved] = s
                moved += 1
        L = b - a
        doc_ll += math.lgamma(K * alpha) - math.lgamma(L + K * alpha)
        n_topics = 0
        for i in range(a, b):
            t = z[i]
            if not seen[t]:
                seen[t] = True
                doc_topics[n_topics] = t
                n_topics += 1
        if evaluate:
            for i in range(a, b):
                lw = words[i]
                ws, wshift, wmask = start[lw], shift[lw], start[lw + 1] - start[lw] - 1
                p = alpha * (smass[lw] + dmass)
                for j in range(n_topics):
                    t = doc_topics[j]
                    p += ndk[t] * _stale_weight(tab, ws, wshift, wmask, nt0, t, -1, beta,
                                                vbeta)
                token_ll += math.log(p / (L + K * alpha))
        for j in range(n_topics):
            t = doc_topics[j]
            doc_ll += math.lgamma(ndk[t] + alpha) - lg_alpha
            ndk[t] = 0
            seen[t] = False
    return moved_w[:moved], moved_from[:moved], moved_to[:moved], doc_ll, token_ll


@numba.njit(nogil=True, cache=True)
def mh_transitions(zd, pos, w, word_topic, nt, stale_word_topic, stale_nt, alpha, beta,
                   mh_steps, trials, seed):
    """For tests: the topic of token `pos` of document `zd` (word w) after one transition
    of `mh_steps` MH cycles, `trials` times, each from the state zd[pos] with a fresh draw.
    word_topic (V × K) and nt are the current counts *without* the token; the proposals
    come from stale_word_topic / stale_nt (also without it) plus the token in topic
    zd[pos], as a pulled block holds it. The same `_mh` as `sample_block`. Returns the
    counts of the end states (K,)."""
    np.random.seed(seed)
    V, K = word_topic.shape
    vbeta = V * beta
    s0 = zd[pos]
    pulled = stale_word_topic[w].astype(np.int64)
    pulled[s0] += 1
    pulled_nt = stale_nt.astype(np.int64)
    pulled_nt[s0] += 1
    # the block's view of one word: its row, pulled and current
    row_ptr = np.array([0, K], np.int64)
    row_topics = np.arange(K).astype(np.int64)
    tab, start, shift = _table(row_ptr, row_topics, pulled, np.zeros(1, np.int64),
                               np.empty((0, 4), np.int32))
    mask = start[1] - 1
    for t in range(K):
        tab[_slot(tab, 0, shift[0], mask, t), 1] = word_topic[w, t]
    sprob, salias, smass, dprob, dalias, dmass = _proposals(row_ptr, row_topics, pulled,
                                                            pulled_nt, K, vbeta, beta)
    ndk = np.zeros(K, np.int64)
    for i in range(zd.size):
        if i != pos:
            ndk[zd[i]] += 1
    out = np.zeros(K, np.int64)
    work = zd.copy()
    h = _slot(tab, 0, shift[0], mask, s0)
    for _ in range(trials):
        work[pos] = s0
        s, _ = _mh(s0, h, 0, K, work, pos, ndk, tab, 0, shift[0], mask, nt, pulled_nt,
                   row_ptr, row_topics, sprob, salias, smass, dprob, dalias, dmass, alpha, beta,
                   vbeta, mh_steps)
        out[s] += 1
    return out

"""One LDA worker: its documents and their tokens' topics, sampled block by block against
the word-topic counts on the parameter server (Glint's and LightLDA's data flow).

The worker's documents are cut into blocks of about BLOCK_TOKENS tokens (whole documents).
For each block it pulls the nonzero counts of the block's words (`sparse_rows`, CSR) and
the topic totals, samples every token of the block on a thread (`kernels.sample_block`,
which releases the GIL), then pushes the block's count deltas (-1 at (word, old topic),
+1 at (word, new topic), summed per entry) with add aggregation, exactly once. Transfers
overlap sampling: while block b samples, block b - 1's push lands and then block b + 1 is
pulled (block b's push waits for that pull's answer). So block b + 1 samples with counts
that lack its own worker's block b and what the other workers have sampled but not pushed
yet (at most two blocks each): that is the staleness, as in Glint. Documents' counts never
leave the worker.

Everything drawn is seeded: the initial topics by `[seed, index]`, block b of iteration i
by `[seed, index, i, b]`; one worker alone is deterministic, however many blocks."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from psframework import AsyncClient
from models.lda import counts, kernels
from models.lda.corpus import Tokens
from models.lda.plugin import TOPIC_TOTALS, WORD_TOPIC

__all__ = ["Worker", "Sweep", "BLOCK_TOKENS", "pull_sparse", "log_likelihood"]

# tokens per block: a frequent word's row is pulled and tabled once a block (4M tokens,
# k = 100 vs 1,000: blocks of 1 << 17 took 3.9 vs 5.1 s an iteration, these 3.1 vs 4.3)
BLOCK_TOKENS = 1 << 19
REPLY_BYTES = 16 << 20  # a sparse_rows request asks for at most this much reply


@dataclass
class Sweep:
    """What one worker's pass over its tokens found."""
    tokens: int = 0
    moved: int = 0  # tokens whose topic changed
    doc_loglik: float = 0.0  # the documents' part of the collapsed log-likelihood
    token_loglik: float = 0.0  # Σ log p(w | d) (with evaluate; else 0)
    seconds: float = 0.0

    def __add__(self, other: "Sweep") -> "Sweep":
        return Sweep(self.tokens + other.tokens, self.moved + other.moved,
                     self.doc_loglik + other.doc_loglik,
                     self.token_loglik + other.token_loglik,
                     max(self.seconds, other.seconds))


async def pull_sparse(client: AsyncClient, model: str, rows: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nonzero word-topic counts of `rows` (global word ids), as CSR in their order."""
    info = await client.model(model)
    spec = info.table(WORD_TOPIC)
    per_request = max(1, REPLY_BYTES // (8 * spec.shape[1]))
    jobs = []
    for part, pos, local in spec.split().split(rows):
        at = np.arange(rows.size)[pos]
        for c in range(0, local.size, per_request):
            jobs.append((part, at[c:c + per_request], local[c:c + per_request]))
    replies = await asyncio.gather(*(
        client.call(model, "sparse_rows", {}, (local,), parts=[part], idempotent=True)
        for part, _, local in jobs))
    lengths = np.zeros(rows.size, np.int64)
    for (_, at, _), [(_, (indptr, _, _))] in zip(jobs, replies):
        lengths[at] = np.diff(indptr)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    topics = np.empty(indptr[-1], np.int32)
    values = np.empty(indptr[-1], np.int32)
    for (_, at, _), [(_, (local_ptr, t, n))] in zip(jobs, replies):
        sizes = np.diff(local_ptr)
        dest = np.repeat(indptr[at] - local_ptr[:-1], sizes) + np.arange(t.size)
        topics[dest], values[dest] = t, n
    return indptr, topics, values


async def push_moves(client: AsyncClient, model: str, K: int, words: np.ndarray,
                     old: np.ndarray, new: np.ndarray) -> None:
    """Move tokens of `words` from topics `old` to `new` in the counts: one push of the
    summed word-topic deltas, one of the totals'."""
    if words.size == 0:
        return
    keys = np.concatenate([words * K + old, words * K + new])
    delta = np.concatenate([np.full(words.size, -1, np.int64), np.ones(words.size, np.int64)])
    keys, where = np.unique(keys, return_inverse=True)
    summed = np.bincount(where, weights=delta, minlength=keys.size).astype(np.int64)
    keep = summed != 0
    keys, summed = keys[keep], summed[keep]
    totals = np.bincount(new, minlength=K) - np.bincount(old, minlength=K)
    changed = np.flatnonzero(totals)
    await asyncio.gather(
        client.push(model, WORD_TOPIC, keys // K, keys % K, summed.astype(np.int32)),
        client.push(model, TOPIC_TOTALS, changed, None, totals[changed].astype(np.int64)))


async def log_likelihood(client: AsyncClient, model: str, V: int, beta: float,
                         doc_loglik: float) -> float:
    """The collapsed log-likelihood log p(w, z) of the counts on the server, given the
    documents' part (the workers' Sweep.doc_loglik, summed)."""
    replies = await client.call(model, "word_log_likelihood", idempotent=True)
    nt = await client.pull_rows(model, TOPIC_TOTALS, np.arange(
        (await client.model(model)).table(TOPIC_TOTALS).shape[0]))
    words = sum(args["value"] for args, _ in replies)
    return float(words + counts.topic_log_likelihood(nt, V, beta) + doc_loglik)


class Worker:
    """Samples the topics of `docs` (word ids below the model's vocabulary) for the model
    `model` on the server: k topics, priors alpha and beta, `mh_steps` Metropolis-Hastings
    cycles per token (or the exact O(k) conditional with exact=True), in blocks of about
    BLOCK_TOKENS tokens."""

    def __init__(self, client: AsyncClient, model: str, docs: Tokens, *, k: int,
                 alpha: float, beta: float, mh_steps: int, exact: bool, seed: int,
                 index: int = 0) -> None:
        self.client, self.model, self.docs = client, model, docs
        self.K, self.V = k, docs.vocabulary
        self.alpha, self.beta, self.mh_steps, self.exact = alpha, beta, mh_steps, exact
        self.seed, self.index = seed, index
        self._scratch = np.empty((0, 4), np.int32)  # the sampler's tables of counts
        rng = np.random.default_rng([seed, index])
        self.z = rng.integers(0, k, docs.words.size).astype(np.int64)
        # blocks of whole documents; each with its sorted distinct words and the
        # tokens' indices into them
        self.blocks: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        edges = np.searchsorted(docs.doc_ptr, np.arange(0, docs.words.size, BLOCK_TOKENS),
                                side="right") - 1
        starts = sorted(set(edges.tolist()) | {0})
        for a, b in zip(starts, starts[1:] + [docs.documents]):
            if b <= a:
                continue
            t0, t1 = docs.doc_ptr[a], docs.doc_ptr[b]
            uniq, local = np.unique(docs.words[t0:t1], return_inverse=True)
            self.blocks.append((a, b, uniq, local.astype(np.int64)))

    async def initialize(self) -> None:
        """Push the counts of the initial (uniformly drawn) topics."""
        if self.z.size == 0:
            return
        keys, n = counts.count_pairs(self.docs.words, self.z, self.K)
        totals = np.bincount(self.z, minlength=self.K)
        await asyncio.gather(
            self.client.push(self.model, WORD_TOPIC, keys // self.K, keys % self.K,
                             n.astype(np.int32)),
            self.client.push(self.model, TOPIC_TOTALS, np.arange(self.K), None, totals))

    async def _push(self, after: asyncio.Future | None, words: np.ndarray, old: np.ndarray,
                    new: np.ndarray) -> None:
        """Push a block's moves once the next block's pull (`after`) has its answer, so
        that what that pull sees does not depend on timing."""
        if after is not None:
            await after
        await push_moves(self.client, self.model, self.K, words, old, new)

    async def _view(self, b: int, after: asyncio.Task | None):
        if after is not None:
            await after
        rows = self.blocks[b][2]
        sparse, nt = await asyncio.gather(
            pull_sparse(self.client, self.model, rows),
            self.client.pull_rows(self.model, TOPIC_TOTALS, np.arange(self.K)))
        return sparse, nt.astype(np.int64)

    def _sample(self, b: int, iteration: int, view, evaluate: bool):
        a, stop, _, local = self.blocks[b]
        (row_ptr, row_topics, row_counts), nt = view
        t0, t1 = self.docs.doc_ptr[a], self.docs.doc_ptr[stop]
        seed = int(np.random.SeedSequence([self.seed, self.index, iteration, b])
                   .generate_state(1)[0])
        z = self.z[t0:t1]
        starts, _ = kernels.table_layout(row_ptr, np.bincount(local, minlength=row_ptr.size - 1))
        if self._scratch.shape[0] < starts[-1]:  # kept from block to block: no page faults
            self._scratch = np.empty((int(starts[-1] * 1.25), 4), np.int32)
        return kernels.sample_block(self.docs.doc_ptr[a:stop + 1] - t0, local, z, row_ptr,
                                    row_topics, row_counts, nt, self.V, self.alpha, self.beta,
                                    self.mh_steps, self.exact, evaluate, seed, self._scratch)

    async def sweep(self, iteration: int, evaluate: bool = False) -> Sweep:
        """Sample every token once (iteration `iteration`); returns when every push has
        landed."""
        began = time.perf_counter()
        loop = asyncio.get_running_loop()
        out = Sweep(tokens=int(self.docs.words.size))
        if not self.blocks:
            return out
        pending: list[asyncio.Task] = []
        push: asyncio.Task | None = None
        try:
            view = asyncio.ensure_future(self._view(0, None))
            pending.append(view)
            for b in range(len(self.blocks)):
                current = await view
                sampled = loop.run_in_executor(None, self._sample, b, iteration, current,
                                               evaluate)
                if b + 1 < len(self.blocks):
                    view = asyncio.ensure_future(self._view(b + 1, push))
                    pending.append(view)
                moved_w, old, new, doc_ll, token_ll = await sampled
                out.moved += int(moved_w.size)
                out.doc_loglik += doc_ll
                out.token_loglik += token_ll
                push = asyncio.ensure_future(self._push(
                    view if b + 1 < len(self.blocks) else None, self.blocks[b][2][moved_w],
                    old, new))
                pending.append(push)
            if push is not None:
                await push
        finally:
            for task in pending:
                task.cancel()
        out.seconds = time.perf_counter() - began
        return out

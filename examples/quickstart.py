"""Quick start: an embedded cluster (a master and two shards on loopback), one matrix and
one vector, concurrent pushes from several threads, and a check against numpy.

    python examples/quickstart.py
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

import psframework as psf
from psframework.cli import format_status

ROWS, COLS = 10_000, 32
THREADS, BATCHES, BATCH = 4, 25, 256


def worker(client: psf.Client, seed: int, deltas: list) -> None:
    """Push random row updates to the matrix and counts to the vector; keep what was sent."""
    rng = np.random.default_rng(seed)
    matrix = client.matrix("embeddings")
    counts = client.vector("counts")
    for _ in range(BATCHES):
        rows = rng.integers(0, ROWS, BATCH)
        values = rng.normal(0.0, 0.01, (BATCH, COLS)).astype(np.float32)
        matrix.push_rows(rows, values)                  # added on the shards, exactly once
        counts.push(rows, np.ones(BATCH, np.int64))     # duplicate rows accumulate
        deltas.append((rows, values))


def main() -> int:
    with psf.LocalCluster(shards=2) as cluster:
        client = cluster.client()
        matrix = client.create_matrix("embeddings", ROWS, COLS, "float32",
                                      init=psf.init.uniform(-0.1, 0.1, seed=1))
        counts = client.create_vector("counts", ROWS, "int64", partitioner="cyclic")
        start = matrix.to_numpy()

        deltas: list = []
        threads = [threading.Thread(target=worker, args=(client, seed, deltas))
                   for seed in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        expected, expected_counts = start.copy(), np.zeros(ROWS, np.int64)
        for rows, values in deltas:
            np.add.at(expected, rows, values)
            np.add.at(expected_counts, rows, 1)
        assert len(deltas) == THREADS * BATCHES, "a worker thread failed"
        assert np.allclose(matrix.to_numpy(), expected, atol=1e-5)
        assert np.array_equal(counts.to_numpy(), expected_counts)

        pushes = THREADS * BATCHES
        print(f"{pushes} matrix pushes and {pushes} vector pushes from {THREADS} threads: "
              "the cluster matches numpy\n")
        time.sleep(0.6)  # shards report their counters to the master with each heartbeat (0.5 s)
        print(format_status(client.status()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MF-SGD from plain Python: explicit ratings factorized on an embedded parameter server
with Harp-DAAL's model rotation, then test RMSE beside the global-mean baseline and a
few recommendations.

    python examples/mf_sgd_local.py                  # embedded cluster, 2 shards
    python examples/mf_sgd_local.py --ps HOST:PORT   # a `psframework serve` cluster
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from models.mf_sgd import LocalMFSGD


def synthetic_ratings(n_users=2000, n_items=1000, per_user=50, rank=8, noise=0.5, seed=0):
    """MovieLens-like ratings in [1, 5]: a low-rank model plus biases and noise."""
    rng = np.random.default_rng(seed)
    U, V = rng.normal(0, 0.3, (n_users, rank)), rng.normal(0, 0.3, (n_items, rank))
    bu, bi = rng.normal(0, 0.3, n_users), rng.normal(0, 0.3, n_items)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    r = 3.5 + bu[users] + bi[items] + (U[users] * V[items]).sum(1) + rng.normal(0, noise, users.size)
    return users, items, np.clip(r, 1, 5), rng.random(users.size) < 0.1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ps", help="HOST:PORT of a running psframework master")
    args = p.parse_args()
    users, items, ratings, test = synthetic_ratings()
    train = ~test
    print(f"{users.size:,} ratings, {users.max() + 1} users, {items.max() + 1} items")
    model = LocalMFSGD(rank=16, epochs=20, step_size=0.01, reg=0.05, master=args.ps)
    model.fit(users[train], items[train], ratings[train],
              valid=(users[test], items[test], ratings[test]))
    rmse = np.sqrt(np.mean((model.predict(users[test], items[test]) - ratings[test]) ** 2))
    baseline = np.sqrt(np.mean((ratings[train].mean() - ratings[test]) ** 2))
    print(f"test RMSE {rmse:.4f}  (global mean: {baseline:.4f}, noise: 0.5)")
    ids, scores = model.recommend([0, 1, 2], k=5)
    for u, row, s in zip([0, 1, 2], ids, scores):
        print(f"user {u}: " + ", ".join(f"{i} ({x:.2f})" for i, x in zip(row, s)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
from models.synthetic_ratings import make_ratings


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ps", help="HOST:PORT of a running psframework master")
    args = p.parse_args()
    data = make_ratings(n_users=2000, n_items=1000, ratings_per_user=50, seed=0)
    (users, items, ratings), test = data.train, data.test
    print(f"{users.size:,} training and {test[0].size:,} test ratings, "
          f"{users.max() + 1} users, {items.max() + 1} items")
    model = LocalMFSGD(rank=16, epochs=20, step_size=0.01, reg=0.05, master=args.ps)
    model.fit(users, items, ratings, valid=test)
    rmse = np.sqrt(np.mean((model.predict(test[0], test[1]) - test[2]) ** 2))
    baseline = np.sqrt(np.mean((ratings.mean() - test[2]) ** 2))
    print(f"test RMSE {rmse:.4f}  (global mean: {baseline:.4f}, noise: 0.5)")
    ids, scores = model.recommend([0, 1, 2], k=5)
    for u, row, s in zip([0, 1, 2], ids, scores):
        print(f"user {u}: " + ", ".join(f"{i} ({x:.2f})" for i, x in zip(row, s)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

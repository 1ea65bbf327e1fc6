"""FMPair on an embedded cluster: train with WARP and an artist side feature on synthetic
data, compare with the popularity baseline, recommend, and save/load the model.

    python examples/fmpair_local.py

LocalFMPair starts its own cluster (a master and two shards on loopback) for fit() and
stops it afterwards; pass master="HOST:PORT" to train on a running cluster instead.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from models.fmpair import LocalFMPair
from models.metrics import evaluate
from models.synthetic import make_synthetic, popularity_scores


def main() -> int:
    data = make_synthetic(n_users=3000, n_items=3000, n_artists=300, seed=1)
    print(f"{data.n_users} users, {data.n_items} items, {data.n_artists} artists; "
          f"{data.train.nnz} training and {data.test.nnz} test interactions\n")

    model = LocalFMPair(dims=32, loss="warp", epochs=10, seed=1, show_progress=True)
    # Each item is its identity one-hot plus its artist's one-hot (side feature).
    model.fit(data.train, item_features=data.item_features())

    vectors, bias = model.item_representations()

    def fmpair_scores(users: np.ndarray) -> np.ndarray:
        return model.user_representations(users) @ vectors.T + bias

    print(f"\n{'test, training items excluded':30s} {'precision@10':>12s} {'AUC':>7s}")
    for name, scores in (("FMPair (warp, artist feature)", fmpair_scores),
                         ("popularity", popularity_scores(data.train))):
        m = evaluate(scores, data.test, train=data.train, k=10)
        print(f"{name:30s} {m['precision@10']:12.3f} {m['auc']:7.3f}")

    users = np.array([0, 1, 2])
    ids, scores = model.recommend(users, k=5)  # the users' training items are left out
    print("\ntop 5 (item: score; * = in the user's latent cluster)")
    for user, items, item_scores in zip(users, ids, scores):
        line = ", ".join(f"{i}{'*' if data.item_cluster[i] == data.user_cluster[user] else ''}"
                         f": {s:.2f}" for i, s in zip(items, item_scores))
        print(f"user {user}: {line}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fmpair.npz"
        model.save(path)
        loaded = LocalFMPair.load(path)  # no parameter server needed
        every = np.arange(data.n_users)
        before, after = model.recommend(every, k=10), loaded.recommend(every, k=10)
        same = (np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1]))
        print(f"\nsaved to {path.name} ({path.stat().st_size / 1e6:.1f} MB) and loaded: "
              f"top-10 of all {data.n_users} users {'identical' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

"""MF-SGD: matrix factorization of explicit ratings by SGD on the parameter server, with
Harp-DAAL's model rotation (docs/mf_sgd.md).

    from models.mf_sgd import LocalMFSGD
    model = LocalMFSGD(rank=50, epochs=20).fit(users, items, ratings)
"""

from models.mf_sgd.local import LocalMFSGD

__all__ = ["LocalMFSGD"]

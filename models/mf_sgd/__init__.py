"""MF-SGD: matrix factorization of explicit ratings by SGD on the parameter server, with
Harp-DAAL's model rotation (docs/mf_sgd.md).

    from models.mf_sgd import LocalMFSGD, MFSGD
    model = LocalMFSGD(rank=50, epochs=20).fit(users, items, ratings)   # plain Python
    model = MFSGD(rank=50, maxIter=20).fit(ratings_df)                  # pyspark.ml

`MFSGD` and `MFSGDModel` are imported on first use, so that shards, which load the
plugin from this package, start without pyspark and a JVM."""

from models.mf_sgd.local import LocalMFSGD

__all__ = ["LocalMFSGD", "MFSGD", "MFSGDModel"]


def __getattr__(name: str):
    if name in ("MFSGD", "MFSGDModel"):
        from models.mf_sgd import estimator
        return getattr(estimator, name)
    raise AttributeError(f"module 'models.mf_sgd' has no attribute {name!r}")

"""Randomized SVD and PureSVD on the parameter server: Criteo's Spark-RSVD with the
tall-and-skinny matrices on the PS, so nothing is shuffled or collected (docs/rsvd.md).

    from models.rsvd import randomized_svd, LocalPureSVD, RandomizedSVD, PureSVD
    U, s, Vt = randomized_svd(X, 50)                    # plain Python, as scikit-learn's
    model = LocalPureSVD(rank=50).fit((users, items))   # a local recommender
    svd = RandomizedSVD(k=50).run(entries)              # Spark: s, U and V DataFrames
    model = PureSVD(rank=50).fit(interactions)          # pyspark.ml, ALS's model API

The Spark classes are imported on first use, so that shards, which load the plugin from
this package, start without pyspark and a JVM."""

from models.rsvd.local import LocalPureSVD, LocalRandomizedSVD, randomized_svd

__all__ = ["randomized_svd", "LocalRandomizedSVD", "LocalPureSVD", "RandomizedSVD",
           "SingularValueDecomposition", "PureSVD", "PureSVDModel"]

_SPARK = {"RandomizedSVD": "spark_svd", "SingularValueDecomposition": "spark_svd",
          "PureSVD": "estimator", "PureSVDModel": "estimator"}


def __getattr__(name: str):
    if name in _SPARK:
        import importlib
        return getattr(importlib.import_module(f"models.rsvd.{_SPARK[name]}"), name)
    raise AttributeError(f"module 'models.rsvd' has no attribute {name!r}")

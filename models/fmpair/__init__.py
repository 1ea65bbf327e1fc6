"""FMPair: network-efficient pairwise factorization machines (the LightFM model) on the
parameter server. The plugin registers as model type `fmpair`; `LocalFMPair` trains it
from plain Python, `FMPair` (a pyspark.ml Estimator) from Spark executors.

`FMPair` and `FMPairModel` are imported on first use, so that shards, which load the
plugin from this package, start without pyspark and a JVM."""

from models.fmpair.local import LocalFMPair

__all__ = ["LocalFMPair", "FMPair", "FMPairModel"]


def __getattr__(name: str):
    if name == "FMPair":
        from models.fmpair.estimator import FMPair
        return FMPair
    if name == "FMPairModel":
        from models.fmpair.spark_model import FMPairModel
        return FMPairModel
    raise AttributeError(f"module 'models.fmpair' has no attribute {name!r}")

"""FMPair: network-efficient pairwise factorization machines (the LightFM model) on the
parameter server. The plugin registers as model type `fmpair`; `LocalFMPair` trains it
from plain Python (the Spark estimator `FMPair` comes with the Spark integration)."""

from models.fmpair.local import LocalFMPair

__all__ = ["LocalFMPair"]

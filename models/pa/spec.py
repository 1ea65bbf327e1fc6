"""Passive-aggressive's hyper-parameters, declared once: `LocalPA`'s signature and checks
and `PassiveAggressive`'s Spark Params both come from `SPEC` (`psframework.hyper`). The
plugin's config (n_features, n_weights, classes) is derived from them, not one of them."""

from __future__ import annotations

from psframework import Hyper, HyperSpec, hyper
from models.pa.kernels import VARIANTS
from models.pa.worker import MIXINGS

__all__ = ["SPEC"]



SPEC = HyperSpec(
    "pa",
    Hyper("variant", str, "pa1", "pa, pa1 or pa2: Crammer et al.'s PA, PA-I, PA-II",
          choices=VARIANTS),
    Hyper("C", float, 1.0, "aggressiveness of PA-I and PA-II", low=0, open_low=True),
    Hyper("hash_bits", int, 18, "the feature space has 2^hash_bits columns (hashed "
          "features, or the column indices of CSR / Vector input)", low=1, high=31),
    Hyper("fit_intercept", bool, True, "learn a bias"),
    Hyper("batch_size", int, 64, "examples per pull and push (1: the exact online "
          "algorithm within a worker or task)", low=1),
    Hyper("num_workers", int, 1, "workers learning at once in this process, each one "
          "batch at a time (they share the batches of one partial_fit call)", low=1,
          spark=None),
    Hyper("mixing", str, "average", "how the pushes of workers (tasks) learning at once "
          "combine: 'average' divides each delta by their number, 'add' adds it as it is",
          choices=MIXINGS),
    Hyper("max_iter", int, 5, "fit's passes over the data", low=1),
    Hyper("shuffle", bool, True, "fit: each epoch in a fresh seeded order", spark=None),
    Hyper("seed", int, 0, "random seed of fit's shuffles", spark=None),
    Hyper("name", str, None, "the model's name on the server (None: a fresh one); a named "
          "model on an external cluster outlives close() and is joined by a LocalPA of "
          "the same name", optional=True, spark=None),
    *hyper.local_cluster(),
    hyper.column("features_col", "features", "features: a Vector, or an array<string> of raw "
            "features to hash"),
    hyper.column("label_col", "label", "label column (numbers)"),
    hyper.column("prediction_col", "prediction", "predicted label"),
    hyper.column("raw_prediction_col", "rawPrediction", "margins: [-m, m] for two classes, one "
            "per class otherwise"),
    *hyper.parameter_server(servers=2),
)

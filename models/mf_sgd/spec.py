"""MF-SGD's hyper-parameters, declared once: the plugin's config check, `LocalMFSGD`'s
signature and checks and `MFSGD`'s Spark Params (ALS's names) all come from `SPEC`
(`psframework.hyper`). Local defaults are Surprise's; the Spark estimator keeps ALS's
where they differ (`spark_default`)."""

from __future__ import annotations

from psframework import Hyper, HyperSpec, hyper
from models.recommender_spec import scoring

__all__ = ["SPEC", "SCHEDULES"]

SCHEDULES = ("rotation", "async")



SPEC = HyperSpec(
    "mf_sgd",
    Hyper("rank", int, 100, "latent dimensions", low=1, spark_default=10, plugin=True),
    Hyper("epochs", int, 20, "epochs over the ratings", low=1, spark="maxIter",
          spark_default=10),
    Hyper("step_size", float, 0.005, "SGD learning rate (Surprise's lr_all)", low=0,
          open_low=True),
    Hyper("reg", float, 0.02, "L2 regularization of factors and biases (Surprise's "
          "reg_all)", low=0, spark="regParam"),
    Hyper("biases", bool, True, "model μ + b_u + b_i besides the factors (Surprise's SVD); "
          "without, r ≈ ⟨w_u, h_i⟩"),
    Hyper("schedule", str, "rotation", "rotation: Harp-DAAL's model rotation (equals a "
          "sequential SGD); async: Hogwild-like mini-batches, deltas added",
          choices=SCHEDULES, plugin=True),
    Hyper("num_workers", int, 2, "workers in this process, each owning a block of users",
          low=1, spark=None),
    Hyper("batch_size", int, 1024, "async schedule: ratings per mini-batch", low=1),
    Hyper("concurrent_batches", int, 2, "async schedule: mini-batches in flight per worker "
          "(per Spark task)", low=1, spark="numConcurrentBatches"),
    Hyper("decay", float, 1.0, "the learning rate of epoch e is step_size · decay^e",
          low=0, open_low=True, high=1),
    Hyper("init_std", float, 0.1, "factors start N(0, init_std)", low=0, spark=None),
    Hyper("seed", int, 0, "random seed"),
    *hyper.local_cluster(),
    hyper.column("user_col", "user", "column of user ids (integers >= 0, or integral doubles)"),
    hyper.column("item_col", "item", "column of item ids (integers >= 0, or integral doubles)"),
    hyper.column("rating_col", "rating", "column of ratings"),
    hyper.column("validation_indicator_col", None, "boolean column: rows where it is true are "
            "not trained on but scored after every epoch (validation RMSE)"),
    hyper.column("prediction_col", "prediction", "prediction column"),
    *scoring("rated items"),
    *hyper.parameter_server(servers=2),
)

"""FMPair's hyper-parameters, declared once: the plugin's config check, `LocalFMPair`'s
signature and checks and `FMPair`'s Spark Params all come from `SPEC`
(`psframework.hyper`). Local defaults suit one machine; the Spark estimator keeps the
Glint fork's (`spark_default`)."""

from __future__ import annotations

from psframework import Hyper, HyperSpec, hyper
from models.fmpair.losses import LOSSES
from models.fmpair.sampling import SAMPLERS
from models.recommender_spec import scoring

__all__ = ["SPEC", "OPTIMIZERS"]

OPTIMIZERS = ("adagrad", "adabatch")



SPEC = HyperSpec(
    "fmpair",
    Hyper("dims", int, 32, "latent dimensions", low=1, spark="numDims", spark_default=150,
          plugin=True),
    Hyper("loss", str, "bpr", "the loss: BPR or WARP", choices=LOSSES),
    Hyper("sampler", str, "uniform", "negative sampler: uniform, exp (by popularity rank, "
          "with rho) or crossbatch (other positives of the batch)", choices=SAMPLERS),
    Hyper("rho", float, 1.0, "exp sampler: P(rank r) ∝ exp(-r / (rho · items))", low=0,
          open_low=True),
    Hyper("step_size", float, 0.05, "step size (AdaGrad or AdaBatch scaled)", low=0,
          open_low=True, spark_default=0.1, plugin=True),
    Hyper("linear_reg", float, 0.0, "L2 regularization of the linear weights", low=0,
          spark_default=0.01, plugin=True),
    Hyper("factors_reg", float, 0.0, "L2 regularization of the factors", low=0,
          spark_default=0.001, plugin=True),
    Hyper("optimizer", str, "adagrad", "per-feature adaptive steps: adagrad (LightFM's, "
          "robust to power-law feature frequencies) or adabatch (the Glint fork's, cheaper)",
          choices=OPTIMIZERS, plugin=True),
    Hyper("epochs", int, 10, "epochs over the interactions", low=1, spark="maxIter"),
    Hyper("batch_size", int, 4096, "positives per mini-batch", low=1, spark_default=256),
    Hyper("num_negatives", int, 10, "candidate negatives per positive (warp, crossbatch)",
          low=1),
    Hyper("concurrent_batches", int, 2, "mini-batches in flight (per Spark partition)",
          low=1, spark="numConcurrentBatches"),
    Hyper("filter_seen", bool, True, "never sample a user's own items as negatives",
          spark=None),
    Hyper("threshold", float, None, "which interactions are positives: those whose value "
          "(rating, count) is >= threshold; None: every stored entry of a matrix (negative "
          "ones are refused: set a threshold), every (user, item[, weight]) row with a "
          "weight > 0, or with ratingCol every row whose rating is > 0", optional=True),
    Hyper("seed", int, 0, "random seed", spark_default=1, plugin=True),
    Hyper("cache_ttl", float, 60.0, "seconds a shard keeps a batch's sums for its adjust",
          low=0, open_low=True, local=False, spark=None, plugin=True),
    *hyper.local_cluster(),
    hyper.column("user_col", "user", "column of user ids (integers >= 0, or integral doubles "
            "as StringIndexer makes)"),
    hyper.column("item_col", "item", "column of item ids (integers >= 0, or integral doubles)"),
    hyper.column("rating_col", None, "optional column of ratings or counts: which rows are "
            "positives (see threshold)"),
    hyper.column("weight_col", None, "optional column of each positive's weight in the loss "
            "(LightFM's sample_weight); default 1"),
    Hyper("userctxfeatures_col", str, None, "optional column of user and context features "
          "per interaction (Vector); default: one-hot user ids", optional=True, local=False,
          spark="userctxfeaturesCol"),
    Hyper("itemfeatures_col", str, None, "optional column of the item's features (Vector); "
          "default: one-hot item ids", optional=True, local=False, spark="itemfeaturesCol"),
    hyper.column("sampling_col", None, "optional integer item attribute (e.g. artist): negatives "
            "sharing it with a user's positives are rejected"),
    hyper.column("filter_items_col", None, "optional array<int> column of items never to "
            "recommend to the row's user"),
    hyper.column("prediction_col", "prediction", "score column added by transform"),
    *scoring("items"),
    Hyper("checkpoint_interval", int, None, "checkpoint the model every this many epochs, "
          "to the SparkContext's checkpoint directory (integrated mode) or the master's "
          "checkpoint_dir; unset: never", low=1, optional=True, local=False),
    Hyper("resume_from", str, None, "a checkpoint directory a failed fit named: train from "
          "it, for the epochs it had not done", optional=True, local=False),
    *hyper.parameter_server(servers=3),
)

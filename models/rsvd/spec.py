"""The hyper-parameters of the randomized SVD and of PureSVD, declared once
(`psframework.hyper`): `randomized_svd`'s checks, `RandomizedSVD`'s params (Spark-RSVD's
`RSVDConfig`, camelCased), and `PureSVD`'s local signature and Spark Params (ALS's names:
`rank`, userCol, itemCol, ratingCol) all come from these specs. The plugin's config is
the matrix's shape and the width k + oversample."""

from __future__ import annotations

from psframework import Hyper, HyperSpec, hyper
from models.recommender_spec import scoring

__all__ = ["SPEC", "PURESVD_SPEC", "algorithm"]


def algorithm(rank: str, rank_doc: str) -> tuple[Hyper, ...]:
    """Halko et al.'s parameters, with the rank under the name `rank`."""
    return (
        Hyper(rank, int, 10, rank_doc, low=1),
        Hyper("oversample", int, 10, "extra random vectors p: the sketch has rank + p "
              "columns (Halko et al. suggest 5-10)", low=0),
        Hyper("power_iter", int, 2, "power iterations q (each one pass of A and one of "
              "Aᵀ, re-orthonormalized): more sharpen a slowly decaying spectrum", low=0),
        Hyper("seed", int, 0, "seed of the Gaussian test matrix Ω"),
        Hyper("num_workers", int, 2, "row blocks of the matrix multiplied at once in this "
              "process (the Spark partitions' role)", low=1, spark=None),
    )


SPEC = HyperSpec(
    "rsvd",
    *algorithm("k", "singular values and vectors wanted (Spark-RSVD's embeddingDim)"),
    Hyper("compute_left_singular_vectors", bool, True, "compute U (m × k)"),
    Hyper("compute_right_singular_vectors", bool, True, "compute V (n × k)"),
    Hyper("num_rows", int, None, "m; None: 1 + the largest row index", low=1, optional=True,
          local=False),
    Hyper("num_cols", int, None, "n; None: 1 + the largest column index (entries), or the "
          "vectors' size (row vectors)", low=1, optional=True, local=False),
    Hyper("num_blocks", int, None, "blocks of consecutive rows of the matrix, one per "
          "Spark partition, each multiplied where it lives, with about equal entries; "
          "None: Spark's default parallelism", low=1, optional=True, local=False),
    *hyper.local_cluster(),
    hyper.column("row_col", "row", "entries: column of row indices (integers >= 0)"),
    hyper.column("col_col", "col", "entries: column of column indices (integers >= 0)"),
    hyper.column("value_col", "value", "entries: column of values"),
    hyper.column("features_col", None, "row vectors instead of entries: a Vector per row, "
                 "its index in row_col"),
    *hyper.parameter_server(servers=2),
)

PURESVD_SPEC = HyperSpec(
    "puresvd",
    *algorithm("rank", "latent dimensions: the rank of the truncated SVD of the "
               "user × item matrix"),
    *hyper.local_cluster(),
    hyper.column("user_col", "user", "column of user ids (integers >= 0, or integral doubles)"),
    hyper.column("item_col", "item", "column of item ids (integers >= 0, or integral doubles)"),
    hyper.column("rating_col", None, "column of ratings; unset: implicit data (every "
                 "interaction is a 1)"),
    hyper.column("prediction_col", "prediction", "prediction column: r_u · V · v_i"),
    *scoring("items"),
    *hyper.parameter_server(servers=2),
)

"""The `mf_sgd` model on the parameter server: the item side of the factorization.

One table, row-partitioned over the shards: `items` (items × (rank + 1), float32), each
row an item's factors and, in the last column, its bias, so that a block of the item side
moves in one request. The users' factors and biases never leave the workers that own the
users' ratings (Harp-DAAL's layout). No server ops beyond the built-in pulls and pushes:
the `rotation` schedule replaces a block it trained (aggregate "replace"), `async` adds
deltas ("add")."""

from __future__ import annotations

from typing import Any, Mapping

from psframework import ConfigError, Model, TableSpec
from models.mf_sgd.spec import SCHEDULES, SPEC

__all__ = ["MFSGDModel", "SCHEDULES", "AGGREGATE"]

AGGREGATE = {"rotation": "replace", "async": "add"}


class MFSGDModel(Model):
    """config: n_items, rank, schedule; with `epochs`, also `epoch_errors` (epochs × 6,
    float64, add): the workers' sums of (1, squared error, ratings, seconds, squared
    validation error, validation ratings) for each epoch, which the Spark estimator's
    driver reads while training runs, and `arrivals` (1, add): how many times workers
    have reached the end of a sub-epoch, which they wait on to meet."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        config = SPEC.config(config)  # rank and schedule
        n = config.get("n_items")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"mf_sgd config.n_items must be a positive integer, got {n!r}")
        if config.get("epochs") is not None:  # the Spark driver's per-epoch tables
            config["epochs"] = SPEC["epochs"].check(config["epochs"], "mf_sgd config.epochs")
        super().__init__(config)

    def tables(self) -> list[TableSpec]:
        n, rank = self.config["n_items"], self.config["rank"]
        tables = [TableSpec("items", (n, rank + 1), "float32",
                            aggregate=AGGREGATE[self.config["schedule"]])]
        if self.config.get("epochs"):
            tables.append(TableSpec("epoch_errors", (self.config["epochs"], 6), "float64"))
            tables.append(TableSpec("arrivals", (1,), "float64"))  # workers' meeting count
        return tables

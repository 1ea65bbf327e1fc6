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

__all__ = ["MFSGDModel", "SCHEDULES", "AGGREGATE"]

SCHEDULES = ("rotation", "async")
AGGREGATE = {"rotation": "replace", "async": "add"}


class MFSGDModel(Model):
    """config: n_items, rank, schedule; with `epochs`, also `epoch_errors` (epochs × 6,
    float64, add): the workers' sums of (1, squared error, ratings, seconds, squared
    validation error, validation ratings) for each epoch, which the Spark estimator's
    driver reads while training runs, and `arrivals` (1, add): how many times workers
    have reached the end of a sub-epoch, which they wait on to meet."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        for key in ("n_items", "rank"):
            value = self.config.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"mf_sgd config {key} must be a positive integer, got {value!r}")
        epochs = self.config.get("epochs")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)
                                   or epochs < 1):
            raise ConfigError(f"mf_sgd config epochs must be a positive integer, got {epochs!r}")
        if self.config.get("schedule") not in SCHEDULES:
            raise ConfigError(f"mf_sgd config schedule must be one of {SCHEDULES}, got "
                              f"{self.config.get('schedule')!r}")

    def tables(self) -> list[TableSpec]:
        n, rank = self.config["n_items"], self.config["rank"]
        tables = [TableSpec("items", (n, rank + 1), "float32",
                            aggregate=AGGREGATE[self.config["schedule"]])]
        if self.config.get("epochs"):
            tables.append(TableSpec("epoch_errors", (self.config["epochs"], 6), "float64"))
            tables.append(TableSpec("arrivals", (1,), "float64"))  # workers' meeting count
        return tables

"""The `pa` model on the parameter server: the weights of a linear classifier over a
(hashed) feature space.

One table, `weights`: (n_features + 1) × n_weights, float32, rows dealt cyclically over
the shards, pushes added. Row i holds feature i's weight in each weight vector (1 for
binary labels, one per class for one-vs-rest), so one pull of a batch's active features
brings every class's weights for them; the last row holds the intercepts. This is the
transpose of scikit-learn's coef_ (classes × features), chosen so that a feature's
weights travel together. Workers push deltas, so any number of them can learn at once
(asynchronously, as in the Flink parameter server)."""

from __future__ import annotations

from typing import Any, Mapping

from psframework import ConfigError, Model, TableSpec

__all__ = ["PAModel"]


class PAModel(Model):
    """config: n_features (>= 1) and n_weights (1 for binary labels, else the number of
    classes); with `epochs`, also `progress` (epochs × 4, float64, add): the Spark tasks'
    sums of (1, mistakes, examples, seconds) for each epoch, which the estimator's driver reads
    while training runs; with `stream` true, also `batches` (1, max): one more than the
    last Spark micro-batch learned, so that a micro-batch replayed after a restart is
    not learned twice."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        for key, optional in (("n_features", False), ("n_weights", False), ("epochs", True)):
            value = self.config.get(key)
            if optional and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"pa config {key} must be a positive integer, got {value!r}")

    def tables(self) -> list[TableSpec]:
        tables = [TableSpec("weights", (self.config["n_features"] + 1, self.config["n_weights"]),
                            "float32", partitioner="cyclic", aggregate="add")]
        if self.config.get("epochs"):
            tables.append(TableSpec("progress", (self.config["epochs"], 4), "float64"))
        if self.config.get("stream"):
            tables.append(TableSpec("batches", (1,), "float64", aggregate="max"))
        return tables

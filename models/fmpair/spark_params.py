"""The params of `FMPair` and `FMPairModel`, from FMPair's spec (`models.fmpair.spec`),
and the checks of the columns they name."""

from __future__ import annotations

from pyspark.sql import types as T

from psframework.spark import ml
from models.fmpair.spec import SPEC
from models.spark_estimator import check_columns

__all__ = ["FMPairParams", "COLUMNS"]

# the kind of each column param (models.spark_estimator.check_columns)
COLUMNS = {"userCol": "id", "itemCol": "id", "ratingCol": "number", "weightCol": "number",
           "userctxfeaturesCol": "vector", "itemfeaturesCol": "vector", "samplingCol": "id",
           "filterItemsCol": "id array"}


class FMPairParams(ml.ParamValues):
    """The params of FMPair and FMPairModel: from `models.fmpair.spec.SPEC` (defaults as
    in the Glint fork)."""

    def _check(self) -> None:
        """Every param, before anything starts; errors name the param."""
        self._check_spec()

    def _check_columns(self, schema: T.StructType, *, training: bool,
                       key: str = "userCol") -> None:
        """Columns exist with the right types. Training needs userCol and itemCol and the
        optional columns set; scoring only the `key` column and the others it finds."""
        names = set(schema.fieldNames())
        check_columns(self, schema, {
            name: kind for name, kind in COLUMNS.items() if self._value(name) is not None
            and (training or name == key or self._value(name) in names)}, "FMPair")


ml.declare(FMPairParams, SPEC)

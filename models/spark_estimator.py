"""What the built-in models' pyspark.ml estimators share (FMPair, MF-SGD,
passive-aggressive), so that each says it once:

- columns: `check_columns` (a param's column exists and holds the right kind), and id
  columns as ALS takes and gives them — integers or integral doubles (StringIndexer's
  output) on the way in, checked in one aggregation by `id_ranges` when fitting and row
  by row by `int_ids` when scoring, and Spark ints in every output;
- the parameter server a fit trains on: `start_parameter_server` (integrated or
  separate mode, from the params every PS estimator has) and `training` (the model's
  life on it, `psframework.spark.Training`);
- ALS's outputs: `recommendations_schema`, `TopK` (the top n of any queries × targets
  scoring, in Arrow blocks on the executors), `need_count`, `cold_start`;
- a fitted model's `history` (one dict per epoch of fit) saved and loaded with it:
  `model_writer`, `model_reader`.
"""

from __future__ import annotations

import contextlib
import numbers
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import numpy as np
import pyarrow as pa
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import Column, DataFrame, functions as F, types as T

from psframework import ConfigError
from psframework.spark import (
    SparkParameterServer, Training, arrow, checkpoint_settings, executor_environment_error, ml,
)
from models.frames import recommendations
from models.memory import from_job_failure

__all__ = ["spark_jobs", "check_columns", "id_ranges", "int_ids", "start_parameter_server", "training",
           "recommendations_schema", "TopK", "need_count", "cold_start", "model_writer",
           "model_reader", "held", "MAX_ID", "ID_TYPE"]

V = TypeVar("V")


def held(value: V | None, model: Any, what: str) -> V:
    """`value`, a part of a fitted `model` that its estimator's fit or its load makes; a
    ConfigError saying so for a model built empty."""
    if value is None:
        name = type(model).__name__
        raise ConfigError(f"this {name} holds no {what}: {name.removesuffix('Model')}.fit "
                          f"or {name}.load makes one")
    return value

@contextlib.contextmanager
def spark_jobs(sc: Any, step: str) -> Iterator[None]:
    """Run the Spark jobs of `step`; one that fails raises what it is: the executors'
    Python lacks a module or is another interpreter (ExecutorEnvironmentError), an
    executor ran out of memory (NotEnoughMemoryError), or else the job's own error."""
    try:
        yield
    except Exception as e:
        found = executor_environment_error(e, sc, step) or from_job_failure(e, step)
        if found is None:
            raise
        raise found from e


MAX_ID = 2**31 - 1  # ids are Spark ints, as ALS's
ID_TYPE = T.IntegerType()  # of the ids in every output, as ALS's
INTEGERS = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
NUMBERS = INTEGERS + (T.FloatType, T.DoubleType, T.DecimalType)

# what a column of each kind may hold, and how an error says it
KINDS: dict[str, tuple[Callable[[T.DataType], bool], str]] = {
    "id": (lambda t: isinstance(t, NUMBERS),
           "integer ids (or integral doubles, as StringIndexer makes)"),
    "number": (lambda t: isinstance(t, NUMBERS), "numbers"),
    "boolean": (lambda t: isinstance(t, T.BooleanType), "boolean"),
    "vector": (lambda t: isinstance(t, VectorUDT), "Vector"),
    "id array": (lambda t: isinstance(t, T.ArrayType) and isinstance(t.elementType, INTEGERS),
                 "array<integer>"),
}


def check_columns(params: ml.ParamValues, schema: T.StructType, wanted: Mapping[str, str],
                  who: str) -> None:
    """Each param of `wanted` (param name -> kind: "id", "number", "boolean", "vector",
    "id array") names a column of `schema` that holds that kind; a ConfigError naming the
    param and the column otherwise."""
    fields = {f.name: f.dataType for f in schema.fields}
    for name, kind in wanted.items():
        column = params._value(name)
        if column not in fields:
            raise ConfigError(f"{who} param {name}: column {column!r} is not in the "
                              f"DataFrame (it has {sorted(fields)})")
        ok, said = KINDS[kind]
        if not ok(fields[column]):
            raise ConfigError(f"{who} param {name}: column {column!r} must hold {said}, "
                              f"not {fields[column].simpleString()}")


def id_ranges(df: DataFrame, columns: Mapping[str, str], who: str, *,
              nullable: Iterable[str] = ()) -> tuple[int, dict[str, tuple[int, int] | None]]:
    """(rows, {param: (min, max) of its column, None if it holds no id}) of `df`'s id
    columns (param -> column), by one aggregation; a ConfigError naming the column and
    the fix if one holds nulls (unless its param is `nullable`), values that are not
    integers (NaN, fractions), negative ids, or ids beyond ALS's int range."""
    aggs = [F.count(F.lit(1))]
    for column in columns.values():
        c = F.col(column).cast("double")
        fractional = F.isnan(c) | (c != F.floor(c))
        aggs += [F.min(c), F.max(c), F.count(c), F.count(F.when(fractional, 1)),
                 F.first(F.when(fractional, F.col(column)), ignorenulls=True)]
    row = df.agg(*aggs).first()
    assert row is not None  # an aggregation has one row
    rows, out = int(row[0]), {}
    for k, (name, column) in enumerate(columns.items()):
        low, high, present, fractions, example = row[1 + 5 * k: 6 + 5 * k]
        where = f"{who}: column {column!r} ({name})"
        if present < rows and name not in nullable:
            raise ConfigError(f"{where} must not hold nulls ({rows - present} of {rows} rows "
                              "do)")
        if fractions:
            raise ConfigError(f"{where} must hold integers (integral doubles such as "
                              f"StringIndexer's are fine), found {fractions} other value(s), "
                              f"e.g. {example!r}; index the ids first, e.g. with StringIndexer")
        if present and low < 0:
            raise ConfigError(f"{where}: ids must be >= 0 (found {low:.0f}); index them first, "
                              "e.g. with StringIndexer")
        if present and high > MAX_ID:
            raise ConfigError(f"{where}: ids must be < 2^31, as ALS's (found {high:.0f}); "
                              "index them first, e.g. with StringIndexer")
        out[name] = (int(low), int(high)) if present else None
    return rows, out


def int_id(column: str, who: str) -> Column:
    """`column` as a Spark int, as ALS outputs ids: nulls stay null; a value that is not
    an integer in int range fails the job with an error naming the column (as ALS's
    transform does)."""
    c = F.col(column)
    d = c.cast("double")
    fine = ~F.isnan(d) & (d == F.floor(d)) & (d >= -MAX_ID - 1) & (d <= MAX_ID)
    return (F.when(c.isNull(), F.lit(None).cast("int")).when(fine, c.cast("int"))
            .otherwise(F.raise_error(F.concat(
                F.lit(f"{who}: column {column!r} must hold integer ids (integral doubles "
                      "such as StringIndexer's are fine), found "), c.cast("string")))))


def int_ids(df: DataFrame, columns: Iterable[str], who: str) -> DataFrame:
    """`df` with these id columns as Spark ints (`int_id`), in place, as ALS's transform
    gives them; columns `df` lacks are left alone."""
    present = [c for c in dict.fromkeys(columns) if c in df.columns]
    if not present:
        return df
    kinds = {f.name: f.dataType for f in df.schema.fields}
    casts = {c: int_id(c, who) for c in present if not isinstance(kinds[c], T.IntegerType)}
    return df.withColumns(casts) if casts else df


def start_parameter_server(params: ml.ParamValues, spark: Any,
                           every: int | None = None) -> SparkParameterServer:
    """The parameter server a fit trains on (not started yet: use it in a `with`): the
    one at parameterServerHost (separate mode) or numParameterServers shards started on
    the executors (integrated mode; checkpointing to the SparkContext's checkpoint
    directory every `every` epochs, if set)."""
    host = params._value("parameterServerHost")
    if host:
        return SparkParameterServer(spark, host=host)
    return SparkParameterServer(spark, params._value("numParameterServers"),
                                **checkpoint_settings(spark, every))


def training(params: ml.ParamValues, ps: SparkParameterServer, kind: str, config: dict,
             what: str, **options: Any) -> Training:
    """`psframework.spark.Training` of a freshly named `kind` model (`training.name`) with
    the estimator's replicas; `options`: every, resume_from."""
    return Training(ps, f"{kind}-{uuid.uuid4().hex[:12]}", kind, config,
                    replicas=params._value("replicas"), what=what,
                    resumable=params.hasParam("checkpointInterval"), **options)


def recommendations_schema(this: str, other: str) -> T.StructType:
    """ALS's recommendation rows: (this int, recommendations: array<struct<other int,
    rating float>>)."""
    return T.StructType([T.StructField(this, ID_TYPE), T.StructField(
        "recommendations", T.ArrayType(T.StructType([
            T.StructField(other, ID_TYPE), T.StructField("rating", T.FloatType())])))])


def need_count(n: Any, what: str) -> int:
    """`n` as an int if it is a positive integer (numpy's too), else a ConfigError."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(f"{what} must be a positive integer, got {n!r}")
    return int(n)


def cold_start(out: DataFrame, params: ml.ParamValues) -> DataFrame:
    """transform's rows as coldStartStrategy says: "nan" keeps the rows of unknown ids
    (their prediction NaN), "drop" drops them, as ALS."""
    if params._value("coldStartStrategy") == "drop":
        return out.where(~F.isnan(params._value("predictionCol")))
    return out


class TopK:
    """mapInArrow: rows of ids (column `id`; with `exclude`, also an array<int> column
    `exclude` of each id's targets to leave out) to ALS's recommendation rows, by
    `models.recommend.top_k` over the broadcast `scoring`: (queries n × d, targets m × d,
    query bias n, target bias m: -inf for targets never to recommend, known: which
    query ids the model knows). Unknown ids get no row, as ALS."""

    def __init__(self, scoring, n: int, names: tuple[str, str], exclude: bool = False) -> None:
        self.scoring, self.n, self.names, self.exclude = scoring, n, names, exclude

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from models.recommend import top_k
        queries, targets, query_bias, target_bias, known = self.scoring.value
        for batch in batches:
            ids = arrow.ids(batch.column("id"))
            keep = (ids >= 0) & (ids < len(queries))
            keep[keep] = known[ids[keep]]
            if not keep.any():
                continue
            rows = np.flatnonzero(keep)
            ids = ids[rows]
            left_out = None
            if self.exclude:
                left_out = arrow.lists_to_csr(batch.column("exclude").take(pa.array(rows)),
                                              len(targets))
            top, scores = top_k(queries[ids], targets, self.n, query_bias=query_bias[ids],
                                target_bias=target_bias, exclude=left_out)
            yield recommendations(ids, top, scores, self.names)


def model_writer(model: Any, save: Callable[[Any, Any], None], **extra: Any) -> ml.ModelWriter:
    """`ml.ModelWriter` of a fitted model that keeps its `history` (per epoch of fit) in
    the metadata, beside `extra`."""
    return ml.ModelWriter(model, save, {"history": model.history, **extra})


def model_reader(cls: type, build: Callable[[dict, Any, Any], Any]) -> ml.ModelReader:
    """`ml.ModelReader` that builds the model with `build(metadata, data_dir, reader)`
    and gives it back its `history`."""
    def built(meta: dict, data: Any, reader: Any) -> Any:
        model = build(meta, data, reader)
        model.history = meta.get("history", [])
        return model
    return ml.ModelReader(cls, built)

"""Passive-aggressive: online linear classification on hashed features, with the weights
on the parameter server (docs/pa.md).

    from models.pa import LocalPA, PassiveAggressive, StreamingPassiveAggressive
    model = LocalPA(variant="pa1", C=1.0).partial_fit(X, y, classes=[0, 1])  # Python
    model = PassiveAggressive(maxIter=5).fit(df)                             # pyspark.ml
    stream = StreamingPassiveAggressive(spark, classes=[0, 1]).start(sdf)     # streaming

The Spark classes are imported on first use, so that shards, which load the plugin from
this package, start without pyspark and a JVM."""

from models.pa.local import LocalPA

__all__ = ["LocalPA", "PassiveAggressive", "PassiveAggressiveModel",
           "StreamingPassiveAggressive"]


def __getattr__(name: str):
    if name in ("PassiveAggressive", "PassiveAggressiveModel"):
        from models.pa import estimator
        return getattr(estimator, name)
    if name == "StreamingPassiveAggressive":
        from models.pa import spark_streaming
        return spark_streaming.StreamingPassiveAggressive
    raise AttributeError(f"module 'models.pa' has no attribute {name!r}")

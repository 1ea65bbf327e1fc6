"""Spark integration: a parameter server for a Spark application, and the executors'
client. The only part of psframework that imports pyspark.

    from psframework.spark import SparkParameterServer, executor_client

    with SparkParameterServer(spark, num_shards=3) as ps:    # master on the driver,
        master = ps.master                                   # shards on executors
        def train(rows):
            client = executor_client(master)                 # one per Python worker
            ...
        rdd.foreachPartition(train)

The secret travels through Spark configuration: `spark.psframework.secret` for the
driver and `spark.executorEnv.PSF_SECRET` for the executors (see docs/spark.md).
"""

from psframework.spark import arrow, ml
from psframework.spark.executor import executor_client
from psframework.spark.interpreter import executor_environment_error, pin_local_interpreter
from psframework.spark.launch import ShardProcess
from psframework.spark.meeting import Meeting
from psframework.spark.parameter_server import SparkParameterServer
from psframework.spark.progress import TableProgress, visible
from psframework.spark.training import Training, checkpoint_settings

__all__ = ["SparkParameterServer", "ShardProcess", "executor_client", "arrow", "ml",
           "pin_local_interpreter", "executor_environment_error", "TableProgress", "Training",
           "checkpoint_settings", "Meeting", "visible"]

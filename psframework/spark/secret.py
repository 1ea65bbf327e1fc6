"""The shared secret of a Spark application. It travels through Spark configuration,
never through the code that Spark ships to executors:

- the driver reads `spark.psframework.secret`, else PSF_SECRET of its own environment;
- executors read PSF_SECRET of their Python workers' environment, which Spark fills from
  `spark.executorEnv.PSF_SECRET` (pyspark's `SparkContext.environment`).

Both must name the same secret (or both none); the check runs on the driver before
anything starts, because a mismatch would otherwise surface as authentication failures
inside tasks. Spark redacts configuration keys containing "secret" in its UI and logs.
"""

from __future__ import annotations

import os
from typing import Any

from psframework.errors import ConfigError

__all__ = ["SECRET_CONF", "EXECUTOR_SECRET_CONF", "application_secret"]

SECRET_CONF = "spark.psframework.secret"
EXECUTOR_SECRET_CONF = "spark.executorEnv.PSF_SECRET"


def application_secret(spark: Any) -> str | None:
    """The secret the driver uses, after checking that executors get the same one."""
    driver = spark.conf.get(SECRET_CONF, None) or os.environ.get("PSF_SECRET") or None
    executors = spark.sparkContext.environment.get("PSF_SECRET") or None
    if driver == executors:
        return driver
    if executors is None:
        raise ConfigError(
            f"the driver has a psframework secret ({SECRET_CONF} or PSF_SECRET) but executors "
            f"get none: set {EXECUTOR_SECRET_CONF} to the same value when building the "
            "SparkSession (executor environment is fixed when the SparkContext starts)")
    if driver is None:
        raise ConfigError(
            f"executors get a psframework secret through {EXECUTOR_SECRET_CONF} but the "
            f"driver has none: set {SECRET_CONF} to the same value")
    raise ConfigError(
        f"{SECRET_CONF} (or the driver's PSF_SECRET) and {EXECUTOR_SECRET_CONF} differ, so "
        "executors would fail to authenticate: set both to the same secret")

"""Executor side: the client a Spark task uses."""

from __future__ import annotations

from psframework.client import Client, get_client

__all__ = ["executor_client"]


def executor_client(master: str) -> Client:
    """The one client of this Python worker for `master`, made on first use and reused by
    every later task the worker runs (with `spark.python.worker.reuse=true`, the default,
    a worker and its connections outlive a task). Its settings come from PSF_* variables
    of the worker's environment, which Spark sets from `spark.executorEnv.PSF_*`; that is
    how the secret arrives (`spark.executorEnv.PSF_SECRET`). Handles (`BigMatrix`,
    `BigVector`) shipped in a task's closure use this same client."""
    return get_client(master)

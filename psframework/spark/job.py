"""A Spark job the driver can give up on: collect an RDD, or cancel it after a timeout."""

from __future__ import annotations

import uuid
from typing import Any

from pyspark import InheritableThread, RDD

__all__ = ["collect_within"]


def collect_within(rdd: RDD, timeout: float, description: str) -> list[Any] | None:
    """`rdd.collect()`, or None if it has not finished within `timeout` seconds, in which
    case the job is cancelled. The job runs in a thread of its own with its own job
    group, so the caller's job group and local properties are left as they were."""
    sc = rdd.context
    group = f"psframework-{uuid.uuid4().hex}"
    outcome: dict[str, Any] = {}

    def run() -> None:
        sc.setJobGroup(group, description, interruptOnCancel=True)
        try:
            outcome["rows"] = rdd.collect()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = e

    thread = InheritableThread(target=run, daemon=True, name="psframework-spark-job")
    thread.start()
    try:
        thread.join(max(timeout, 0.0))
    finally:  # on time out, and when the caller is interrupted while waiting
        if thread.is_alive():
            sc.cancelJobGroup(group)
    if thread.is_alive():
        return None
    if "error" in outcome:
        raise outcome["error"]
    return outcome["rows"]

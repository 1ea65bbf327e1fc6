"""models.memory: a step that would not fit fails first, saying where, how much and what
to change; a Spark job that failed for lack of memory on an executor is reported as such
on the driver (a real job on the test session)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from psframework import ConfigError
from models.fmpair import FMPair
from models.memory import NotEnoughMemoryError, available_memory, ensure_memory, from_job_failure


def test_a_step_that_does_not_fit_names_itself_its_size_and_the_fix():
    have = available_memory()
    assert 0 < have < 1 << 50
    ensure_memory(1 << 20, "a small step", "nothing")  # fits: no error
    with pytest.raises(NotEnoughMemoryError) as e:
        ensure_memory(have * 4, "building the index", "use more partitions")
    text = str(e.value)
    assert "building the index needs" in text and "use more partitions" in text
    assert f"{have * 4 / 1e9:.2f} GB" in text
    assert isinstance(e.value, MemoryError)


def test_an_address_space_limit_caps_what_is_available():
    """Spark's spark.executor.pyspark.memory sets RLIMIT_AS in its Python workers."""
    limit = 2 * 2**30
    code = ("import resource; from models.memory import available_memory; "
            f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
            "print(available_memory())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert 0 <= int(out.stdout) < limit


def _short_of_memory(rows):
    ensure_memory(1 << 60, "task step", "give it more")
    return rows


def _broken(rows):
    raise ValueError("not about memory")


def test_an_executors_shortage_reaches_the_driver_as_not_enough_memory(spark):
    rdd = spark.sparkContext.parallelize(range(4), 2)
    with pytest.raises(Exception) as e:
        rdd.mapPartitions(_short_of_memory).collect()
    found = from_job_failure(e.value, "the step")
    assert isinstance(found, NotEnoughMemoryError)
    assert str(found).startswith(f"task step needs {2**60 / 1e9:.2f} GB")
    assert "give it more" in str(found)
    with pytest.raises(Exception) as e:
        rdd.mapPartitions(_broken).collect()
    assert from_job_failure(e.value, "the step") is None


def _killed(rows):
    import os
    import signal
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's out-of-memory killer does
    return rows


def test_a_worker_killed_outright_is_reported_as_likely_out_of_memory(spark):
    with pytest.raises(Exception) as e:
        spark.sparkContext.parallelize(range(2), 1).mapPartitions(_killed).collect()
    found = from_job_failure(e.value, "the step")
    assert isinstance(found, NotEnoughMemoryError)
    assert str(found).startswith("the step: an executor's Python worker died")


def test_fmpair_fit_on_sparse_ids_fails_before_allocating_for_them(spark):
    """A user id of 2^31 - 2 would mean a feature space of 2^31 users on the driver; one
    of 10^11 is not even a Spark int id, as ALS's are."""
    df = spark.createDataFrame([(0, 0), (2**31 - 2, 1)], "user long, item long")
    with pytest.raises(NotEnoughMemoryError, match="StringIndexer"):
        FMPair(numParameterServers=1, maxIter=1).fit(df)
    df = spark.createDataFrame([(0, 0), (10**11, 1)], "user long, item long")
    with pytest.raises(ConfigError, match="< 2\\^31.*StringIndexer"):
        FMPair(numParameterServers=1, maxIter=1).fit(df)

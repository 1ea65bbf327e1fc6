"""Which Python Spark's workers run, tried as users run their scripts: the venv's
interpreter called by its path, the venv not activated (its bin not on PATH), so
pyspark's default `python3` is another interpreter. Local mode must use the driver's;
an interpreter the user chose that lacks psframework must be reported as what it is,
an ExecutorEnvironmentError naming the setting, not as a network error.

The scripts start their own SparkSession in a subprocess (their environment is the
point), so they are few and small; the in-process tests use the shared session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from psframework import ConfigError, ExecutorEnvironmentError, LocalCluster
from psframework.spark import (
    SparkParameterServer, Training, executor_environment_error, pin_local_interpreter,
)
from conftest import PLUGIN_ENV, SPARK_SECRET

DRIVER = sys.executable  # the venv's python when the tests run as the README says

SERVE = """
import functools, json, shutil, sys
import numpy as np
from pyspark.sql import SparkSession
from psframework.spark import SparkParameterServer

def push(matrix, rows):
    for i in rows:
        matrix.push_rows([i % 10], np.full((1, 4), float(i)))
    yield sys.executable

spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false").getOrCreate())
sc = spark.sparkContext
default = sc.pythonExec
try:
    with SparkParameterServer(spark, num_shards=2, timeout=240, master_grace=1.0,
                              heartbeat_interval=0.2) as ps:
        matrix = ps.client().create_matrix("m", 10, 4, "float64")
        ran = sc.parallelize(range(40), 2).mapPartitions(functools.partial(push, matrix)).collect()
        got = matrix.to_numpy()
    want = np.zeros((10, 4))
    for i in range(40):
        want[i % 10] += i
    print("RESULT " + json.dumps({
        "default": default, "path_python3": shutil.which("python3"), "driver": sys.executable,
        "workers": sorted(set(ran)), "equal": bool(np.array_equal(got, want))}))
finally:
    spark.stop()
"""

REFUSED = """
import json, sys
from pyspark.sql import SparkSession
from psframework.spark import SparkParameterServer

builder = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
           .config("spark.ui.showConsoleProgress", "false"))
if len(sys.argv) > 1:
    builder = builder.config("spark.pyspark.python", sys.argv[1])
spark = builder.getOrCreate()
try:
    with SparkParameterServer(spark, num_shards=2, timeout=600) as ps:
        print("RESULT " + json.dumps({"started": ps.master}))
except Exception as e:
    print("RESULT " + json.dumps({
        "type": type(e).__name__, "mro": [c.__name__ for c in type(e).__mro__],
        "message": str(e), "module": getattr(e, "module", None),
        "interpreter": getattr(e, "interpreter", None), "setting": getattr(e, "setting", None)}))
finally:
    spark.stop()
"""


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    """The same Python version as the driver's, in a venv with no packages: pyspark's
    worker runs on it (Spark puts pyspark on its path), psframework and numpy do not."""
    where = tmp_path_factory.mktemp("bare-venv")
    subprocess.run([DRIVER, "-m", "venv", "--without-pip", str(where)], check=True,
                   timeout=300)
    python = str(where / "bin" / "python")
    lacks = subprocess.run([python, "-c", "import numpy"], capture_output=True, cwd=where,
                           timeout=120)
    assert lacks.returncode != 0, "the bare venv should not see numpy"
    return python


def user_environment(tmp_path: Path) -> dict[str, str]:
    """This environment as a user who did not activate the venv has it: the venv's bin
    not on PATH, no VIRTUAL_ENV and no interpreter chosen for Spark."""
    drop = {"VIRTUAL_ENV", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYTHONPATH",
            "PYTHONHOME", "SPARK_HOME"}
    bins = {str(Path(DRIVER).parent)}
    if os.environ.get("VIRTUAL_ENV"):
        bins.add(str(Path(os.environ["VIRTUAL_ENV"]) / "bin"))
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                  if p and p.rstrip("/") not in bins)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp_path / "tmp")  # the shards' logs
    return env


def run_script(tmp_path: Path, source: str, *args: str, env: dict[str, str]) -> dict:
    script = tmp_path / "script.py"
    script.write_text(source)
    out = subprocess.run([DRIVER, str(script), *args], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stdout[-3000:] + out.stderr[-5000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_a_script_run_by_the_venvs_python_path_gets_it_on_the_executors(tmp_path):
    env = user_environment(tmp_path)
    assert str(Path(DRIVER).parent) not in env["PATH"].split(os.pathsep)
    result = run_script(tmp_path, SERVE, env=env)
    assert result["default"] == "python3"  # pyspark alone would run PATH's python3,
    assert result["path_python3"] is None or (  # which is not the venv's
        Path(result["path_python3"]).parent != Path(DRIVER).parent)
    assert result["driver"] == DRIVER
    assert result["workers"] == [DRIVER]  # psframework's workers ran the driver's
    assert result["equal"]  # pushed by executors to shards they started, pulled exactly


def test_pyspark_python_without_psframework_is_named_in_a_typed_error(tmp_path, bare_python):
    env = {**user_environment(tmp_path), "PYSPARK_PYTHON": bare_python}
    result = run_script(tmp_path, REFUSED, env=env)
    assert result.get("type") == "ExecutorEnvironmentError", result
    assert "ConfigError" in result["mro"] and "ConnectionLostError" not in result["mro"]
    assert result["module"] == "psframework"
    assert result["interpreter"] == bare_python and result["setting"] == "PYSPARK_PYTHON"
    message = result["message"]
    assert "cannot import 'psframework'" in message and bare_python in message
    assert "point PYSPARK_PYTHON at an interpreter that has psframework installed" in message


def test_spark_pyspark_python_set_in_the_builder_is_what_workers_run(tmp_path, bare_python):
    """pyspark itself ignores spark.pyspark.python outside spark-submit; psframework
    honours it, so a wrong one is reported by that name."""
    result = run_script(tmp_path, REFUSED, bare_python, env=user_environment(tmp_path))
    assert result.get("type") == "ExecutorEnvironmentError", result
    assert result["interpreter"] == bare_python
    assert result["setting"] == "spark.pyspark.python"
    assert "point spark.pyspark.python at an interpreter" in result["message"]


# -- in the shared session ------------------------------------------------------------------
def worker_python(sc) -> list[str]:
    return sc.parallelize([0], 1).map(lambda _: __import__("sys").executable).collect()


def test_workers_an_earlier_job_started_with_another_python_do_not_matter(
        spark, bare_python, monkeypatch):
    """Spark keeps a worker daemon per interpreter, and the interpreter travels with each
    job: once pinned, every later job runs the driver's, whatever ran before."""
    sc = spark.sparkContext
    before = sc.pythonExec
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    try:
        sc.pythonExec = bare_python  # as pyspark's default would have been
        assert worker_python(sc) == [bare_python]
        pin_local_interpreter(sc)
        assert sc.pythonExec == DRIVER
        assert worker_python(sc) == [DRIVER]
    finally:
        sc.pythonExec = before


def test_a_failed_job_is_classified_by_what_the_workers_lacked(spark, bare_python,
                                                                monkeypatch):
    sc = spark.sparkContext
    before = sc.pythonExec
    monkeypatch.setenv("PYSPARK_PYTHON", bare_python)
    try:
        sc.pythonExec = bare_python
        with pytest.raises(Exception) as failed:
            sc.parallelize([0], 1).map(lambda _: __import__("numpy").zeros(1)).collect()
        error = executor_environment_error(failed.value, sc, "the scoring job")
        assert isinstance(error, ExecutorEnvironmentError) and isinstance(error, ConfigError)
        assert (error.module, error.interpreter, error.setting) == (
            "numpy", bare_python, "PYSPARK_PYTHON")
        assert str(error).startswith("the scoring job: the executors' Python workers cannot "
                                     "import 'numpy' (the driver has it)")
    finally:
        sc.pythonExec = before
    with pytest.raises(Exception) as other:  # a failure of another kind is not one
        sc.parallelize([0], 1).map(lambda x: 1 // x).collect()
    assert "ZeroDivisionError" in str(other.value)
    assert executor_environment_error(other.value, sc, "the step") is None


def test_a_fit_whose_executors_lack_a_module_raises_the_typed_error(spark, bare_python,
                                                                   monkeypatch):
    """An estimator's jobs inside its Training block get the same classification, and
    keep Training's note on where the model is."""
    sc = spark.sparkContext
    before = sc.pythonExec
    monkeypatch.setenv("PYSPARK_PYTHON", bare_python)
    with LocalCluster(shards=1, secret=SPARK_SECRET, env=PLUGIN_ENV) as cluster:
        with SparkParameterServer(spark, host=cluster.address) as ps:
            try:
                sc.pythonExec = bare_python
                with pytest.raises(ExecutorEnvironmentError) as raised:
                    with Training(ps, "env-fit", "scaler", {"rows": 4, "cols": 2},
                                  what="Scaler.fit"):
                        sc.parallelize([0], 1).map(lambda _: __import__("numpy")).collect()
            finally:
                sc.pythonExec = before
            assert ps.client().destroy("env-fit")  # left where the note says
    error = raised.value
    assert (error.module, error.setting) == ("numpy", "PYSPARK_PYTHON")
    assert str(error).startswith("Scaler.fit: the executors' Python workers cannot import")
    assert "left on the parameter server" in "".join(error.__notes__)
    assert "numpy" in str(error.__cause__)  # Spark's own report stays attached

"""Which Python the executors run, and what to say when it cannot run psframework.

pyspark starts its Python workers with `SparkContext.pythonExec`, which it reads once,
from PYSPARK_PYTHON, when the SparkContext starts — else `python3`, whatever that is on
the workers' PATH. Two things go wrong with that:

- A script run with a virtualenv's interpreter by its path, without activating the
  virtualenv, gets workers that run another `python3`, one without psframework.
- `spark.pyspark.python` set when building a session in a plain `python script.py` is
  never read (only spark-submit turns it into PYSPARK_PYTHON), though Spark documents it
  as the interpreter of the executors.

`pin_local_interpreter` settles the choice before psframework's first Python job, as
spark-submit would: `spark.pyspark.python` if set, else PYSPARK_PYTHON if set, else — in
local modes, where every worker runs on this machine — the driver's own interpreter.
pythonExec travels with each job and Spark keeps worker daemons per interpreter, so the
change holds for every later job, whatever workers earlier jobs started.

When a job fails all the same because the workers cannot import what it needs,
`executor_environment_error` turns Spark's traceback into an `ExecutorEnvironmentError`
that names the module, the interpreter and the setting to change.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
from typing import Any

from psframework.errors import ExecutorEnvironmentError

__all__ = ["pin_local_interpreter", "worker_interpreter", "executor_environment_error",
           "PYTHON_CONF", "PYTHON_ENV"]

log = logging.getLogger("psframework.spark")

PYTHON_CONF = "spark.pyspark.python"
PYTHON_ENV = "PYSPARK_PYTHON"

_MISSING = re.compile(r"No module named '([^']+)'")
_CANNOT_IMPORT = re.compile(r"ImportError: (cannot import name [^\n]+)")
_NO_PROGRAM = re.compile(r'Cannot run program "([^"]+)"')
_VERSION = re.compile(r"Python in worker has different version[^\n]*")


def worker_interpreter(sc: Any) -> tuple[str, str | None]:
    """The interpreter Python workers run (`sc.pythonExec`) and the setting that chose it,
    `spark.pyspark.python` or `PYSPARK_PYTHON`, or None if neither did."""
    chosen, setting = _chosen(sc)
    return sc.pythonExec, setting if sc.pythonExec == chosen else None


def pin_local_interpreter(sc: Any) -> None:
    """Make the Python workers of every later job run `spark.pyspark.python` if it is set,
    else leave PYSPARK_PYTHON's choice, else in local modes (`local[N]`,
    `local-cluster[...]`) run the driver's interpreter, which has psframework installed.
    Call it before the first job that runs Python tasks; calling it again is harmless."""
    chosen, setting = _chosen(sc)
    if setting == PYTHON_CONF and sc.pythonExec != chosen:
        log.info("Spark's Python workers will run %s (%s)", chosen, PYTHON_CONF)
        sc.pythonExec = chosen
    elif (setting is None and sc.master.startswith("local") and sys.executable
          and sc.pythonExec != sys.executable):
        log.info("Spark's local Python workers will run %s (the driver's interpreter)",
                 sys.executable)
        sc.pythonExec = sys.executable


def _chosen(sc: Any) -> tuple[str | None, str | None]:
    """The interpreter the user chose for the workers, and by which setting: as
    spark-submit decides, spark.pyspark.python before PYSPARK_PYTHON."""
    conf = sc.getConf().get(PYTHON_CONF, None)
    if conf:
        return conf, PYTHON_CONF
    env = os.environ.get(PYTHON_ENV)
    return (env, PYTHON_ENV) if env else (None, None)


def executor_environment_error(error: BaseException, sc: Any,
                               step: str) -> ExecutorEnvironmentError | None:
    """The ExecutorEnvironmentError to raise for a Spark job of `step` that failed because
    its Python workers could not run it — a module they cannot import, an interpreter
    that does not exist or is another Python version than the driver's — or None if it
    failed for another reason. Spark reports such a failure as soon as the job aborts, so
    this costs no waiting."""
    text = _text(error)
    interpreter, setting = worker_interpreter(sc)
    ran = _ran(interpreter, setting, sc)
    if m := _NO_PROGRAM.search(text):
        return ExecutorEnvironmentError(
            f"{step}: Spark could not start the executors' Python workers: there is no "
            f"{m.group(1)!r} to run ({_origin(setting)}); "
            f"{_point(setting, sc, interpreter, 'that exists')}",
            interpreter=m.group(1), setting=setting)
    if m := _VERSION.search(text):
        version = "%d.%d" % sys.version_info[:2]
        return ExecutorEnvironmentError(
            f"{step}: the executors' Python is another version than the driver's "
            f"({m.group(0).strip().rstrip('.')}): {ran}; "
            f"{_point(setting, sc, interpreter, f'of Python {version}')}",
            interpreter=interpreter, setting=setting)
    if m := _MISSING.search(text):
        module = m.group(1)
        top = module.split(".")[0]
        what = "psframework" if top in ("psframework", "models") else top
        here = " (the driver has it)" if _importable(top) else ""
        return ExecutorEnvironmentError(
            f"{step}: the executors' Python workers cannot import {module!r}{here}: {ran}; "
            f"{_point(setting, sc, interpreter, f'that has {what} installed', install=what)}",
            module=module, interpreter=interpreter, setting=setting)
    if m := _CANNOT_IMPORT.search(text):
        return ExecutorEnvironmentError(
            f"{step}: the executors' Python workers have other versions of packages than "
            f"the driver ({m.group(1).strip()[:200]}): {ran}; "
            + _point(setting, sc, interpreter,
                     "with the same psframework and dependencies as the driver"),
            interpreter=interpreter, setting=setting)
    return None


def _text(error: BaseException) -> str:
    """The error's text and its causes' (a Py4JJavaError's includes the Java trace)."""
    parts, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(str(current))
        current = current.__cause__
    return "\n".join(parts)


def _ran(interpreter: str, setting: str | None, sc: Any) -> str:
    if setting is None and sc.master.startswith("local") and interpreter == sys.executable:
        return f"they run the driver's interpreter, {interpreter!r}"
    return f"they run {interpreter!r}, {_origin(setting)}"


def _origin(setting: str | None) -> str:
    if setting is not None:
        return f"from {setting}"
    return (f"as neither {PYTHON_CONF} nor {PYTHON_ENV} chose one (pyspark's default "
            "python3 is the first on the executors' PATH)")


def _point(setting: str | None, sc: Any, interpreter: str, which: str,
           install: str | None = None) -> str:
    """What to change: the setting that chose the interpreter (or, if none did, the one to
    set), or where to install what is missing."""
    local = sc.master.startswith("local")
    if setting is None and local and interpreter == sys.executable and install:
        return f"install {install} into it"  # the driver's own interpreter lacks it
    if setting is None:
        fix = f"set {PYTHON_CONF} (or {PYTHON_ENV}) to an interpreter {which}"
    else:
        fix = f"point {setting} at an interpreter {which}"
    if not local:
        fix += " on every executor"
    if install:
        fix += f", or install {install} into {interpreter!r}"
        fix += "" if local else " on every executor"
    return fix


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False

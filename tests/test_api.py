"""The public surface and the design's boundaries."""

from __future__ import annotations

import ast
import multiprocessing
import re
from importlib import metadata
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

import psframework
from psframework import BigMatrix

ROOT = Path(psframework.__file__).parent


def test_exports_are_the_documented_api():
    """docs/architecture.md's "Public API" table and psframework.__all__ name the same
    things, and each name is what its row says it is."""
    doc = (ROOT.parent / "docs" / "architecture.md").read_text()
    section = doc.split("## Public API", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): re.findall(r"`([\w.]+)`", line.split("|")[2])
            for line in section.splitlines() if line.startswith("| ") and "`" in line}
    assert sorted(n for names in rows.values() for n in names) == sorted(psframework.__all__)
    for name in rows["Errors"]:
        err = getattr(psframework, name)
        assert name == "errors" or (isinstance(err, type) and issubclass(err, psframework.PSError))
    for name in rows["Plugins"][:-2] + rows["Clients"] + rows["Servers"]:
        assert callable(getattr(psframework, name)), name
    assert psframework.__version__ == metadata.version("psframework")
    assert issubclass(psframework.ShapeError, psframework.RemoteError)
    assert issubclass(psframework.RequestTimeoutError, TimeoutError)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_boundaries_of_the_design():
    for path in ROOT.rglob("*.py"):
        mods = _imports(path)
        assert not {m for m in mods if m == "models" or m.startswith("models.")}, path
        if "spark" not in path.parts:
            assert not {m for m in mods if m.startswith("pyspark")}, path
    for path in (ROOT.parent / "models").rglob("*.py"):  # plugins use the public API only
        mods = _imports(path)
        # a model's Spark face (estimator.py and its spark_*.py modules): psframework.spark
        estimator = path.name == "estimator.py" or path.name.startswith("spark_")
        inner = {m for m in mods if m.startswith("psframework.")
                 and not (estimator and m == "psframework.spark")}
        assert not inner, f"{path} reaches into {inner}; use what psframework exports"
        if not estimator:  # shards load the plugins without a JVM
            assert not {m for m in mods if m.startswith("pyspark")}, path
    for path in (ROOT / "protocol").glob("*.py"):  # the protocol is sans-IO
        mods = _imports(path)
        assert not mods & {"asyncio", "socket", "selectors", "uvloop"}, path
        assert all(not m.startswith(("psframework.transport", "psframework.client")) for m in mods)


def test_a_client_process_loads_neither_numba_nor_spark():
    """Clients (Spark executors among them) stay light: numba is for shards only."""
    code = ("import sys, psframework; "
            "print(sorted(m for m in ('numba', 'pyspark', 'models') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def _push_from_another_process(handle: BigMatrix) -> None:
    handle.push_rows([1, 2], np.ones((2, 3), "f4"))


def test_handles_pickle_and_reconnect_in_another_process(fresh_cluster, monkeypatch):
    cluster = fresh_cluster(2, secret="pickled")
    c = cluster.client()
    m = c.create_matrix("m", 5, 3, "float32")
    blob = pickle.dumps(m)
    assert b"pickled" not in blob and len(blob) < 400  # a description, not the data
    monkeypatch.setenv("PSF_SECRET", "pickled")  # the secret travels by configuration
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_push_from_another_process, args=(pickle.loads(blob),))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    expected = np.zeros((5, 3), "f4")
    expected[1:3] = 2
    np.testing.assert_array_equal(m.to_numpy(), expected)

"""The parameter tables of docs/fmpair.md (LocalFMPair) and docs/fmpair-spark.md (FMPair)
name every hyper-parameter of FMPair's spec with the spec's default: the tables are
written by hand, the spec is what the code uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from models.fmpair.spec import SPEC

DOCS = Path(__file__).parent.parent / "docs"


def table(doc: str, header: str) -> dict[str, str]:
    """{name: default as written} of the table whose header row starts with `header`;
    a row naming several (`a`, `b`) gives each its comma-separated default."""
    rows, inside = {}, False
    for line in (DOCS / doc).read_text().splitlines():
        if line.startswith(header):
            inside = True
        elif inside and not line.startswith("|"):
            break
        elif inside and line.startswith("| `"):
            names = re.findall(r"`(\w+)`", line.split("|")[1])
            said = line.split("|")[2].strip()
            defaults = said.split(", ") if len(names) > 1 else [said]
            rows.update(zip(names, defaults))
    return rows


def value(said: str):
    """A default as the docs write it, as a Python value (quoted or in backticks: a
    string)."""
    said = said.strip()
    if said[:1] in ('"', "`"):
        return said.strip("`").strip('"')
    if said in ("unset", "None"):
        return None
    if said in ("True", "False"):
        return said == "True"
    for kind in (int, float):
        try:
            return kind(said)
        except ValueError:
            pass
    return said


@pytest.mark.parametrize("doc, header, hypers", [
    ("fmpair.md", "| Parameter |", {h.name: h.default for h in SPEC.local}),
    ("fmpair-spark.md", "| Param |", {n: h.spark_value for n, h in SPEC.spark.items()}),
])
def test_parameter_tables_list_the_spec_with_its_defaults(doc, header, hypers):
    written = table(doc, header)
    assert sorted(set(hypers) - set(written)) == []
    assert {n: value(written[n]) for n in hypers} == hypers

"""Save and load: a loaded model equals the saved one bit for bit, on any cluster."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from psframework import ModelExistsError, StorageError, UnknownModelError, init


def test_save_load_round_trip_bit_for_bit(fresh_cluster, tmp_path):
    first = fresh_cluster(2)
    c = first.client()
    m = c.create_matrix("m", 101, 7, "float32", partition_by="cols", partitioner="cyclic",
                        init=init.normal(0, 1, seed=5))
    m.push_rows([0, 100, 3], np.full((3, 7), 0.125, "f4"))
    v = c.create_vector("v", 33, "int64", partitioner="range")
    v.push(np.arange(33), np.arange(33) ** 2)
    c.create_model("sc", "scaler", {"rows": 20, "cols": 6, "seed": 2})
    c.call("sc", "scale_rows", {"factor": -2.5}, (np.array([1, 2, 3]),))
    before = {"m": m.to_numpy(), "v": v.to_numpy(),
              "sc": c.matrix("sc", "weights").to_numpy()}
    for name in before:
        assert c.save(name, tmp_path / name) == str((tmp_path / name).resolve())
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["type"] == "tables" and meta["parts"] == 2
    save = meta["save_id"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.json", f"values.part0.{save}.npy", f"values.part1.{save}.npy"]
    for record in meta["files"]:  # each file is recorded with its size and checksum
        raw = (tmp_path / "m" / record["file"]).read_bytes()
        assert (len(raw), zlib.crc32(raw)) == (record["bytes"], record["crc32"])
    # saving again replaces the save as a whole and leaves nothing of the old one
    assert c.save("m", tmp_path / "m")
    again = json.loads((tmp_path / "m" / "model.json").read_text())["save_id"]
    assert again != save and sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.json", f"values.part0.{again}.npy", f"values.part1.{again}.npy"]

    c.destroy("m")
    with pytest.raises(UnknownModelError):
        m.to_numpy()
    c.load(tmp_path / "m")
    assert m.to_numpy().tobytes() == before["m"].tobytes()

    # a different cluster with another number of shards loads the same bits
    second = fresh_cluster(3)
    c2 = second.client()
    for name in before:
        c2.load(tmp_path / name, name=f"{name}-copy")
    assert c2.matrix("m-copy").to_numpy().tobytes() == before["m"].tobytes()
    assert c2.vector("v-copy").to_numpy().tobytes() == before["v"].tobytes()
    w = c2.matrix("sc-copy", "weights")
    assert w.to_numpy().tobytes() == before["sc"].tobytes()
    c2.call("sc-copy", "scale_rows", {"factor": 2.0}, (np.array([0]),))  # the plugin is live
    np.testing.assert_array_equal(w.pull_rows([0])[0], 2 * before["sc"][0])

    with pytest.raises(ModelExistsError):
        c2.load(tmp_path / "v", name="v-copy")
    with pytest.raises(StorageError, match="holds no saved model"):
        c2.load(tmp_path / "nothing-here")


def test_load_refuses_corrupt_partitions(fresh_cluster, tmp_path):
    c = fresh_cluster(1).client()
    c.create_matrix("m", 10, 4, "float64")
    c.save("m", tmp_path / "m")
    (part,) = tmp_path.joinpath("m").glob("values.part0.*.npy")
    np.save(part, np.zeros((10, 5)))
    with pytest.raises(StorageError, match=part.name):
        c.load(tmp_path / "m", name="m2")
    with pytest.raises(UnknownModelError):  # nothing half-loaded stays in the catalog
        c.model("m2")

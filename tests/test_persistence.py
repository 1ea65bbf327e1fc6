"""Save and load: a loaded model equals the saved one bit for bit, on any cluster."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import zlib

import numpy as np
import pytest

from psframework import (
    ConfigError, ConnectionLostError, ModelExistsError, StorageError, UnknownModelError, init,
)
from conftest import wait_until


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


def _save_files(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_save_killed_halfway_leaves_the_previous_save_whole(fresh_cluster, tmp_path):
    """One shard has written its part of the new save, the other is killed before it
    writes: the save fails, and the earlier save is what a load finds, bit for bit."""
    cluster = fresh_cluster(2)
    c = cluster.client()
    m = c.create_matrix("m", 400, 64, "float64", init=init.normal(seed=3))
    c.save("m", tmp_path / "m")
    first = m.to_numpy()
    published = _save_files(tmp_path / "m")
    m.push_rows(np.arange(400), np.ones((400, 64)))
    frozen = cluster.shard_processes[1]
    frozen.send_signal(signal.SIGSTOP)
    outcome: dict = {}
    saver = threading.Thread(target=lambda: outcome.update(error=_raises(
        lambda: c.save("m", tmp_path / "m"))))
    saver.start()
    # the live shard writes its new partition under the new save's name ...
    wait_until(lambda: len([p for p in (tmp_path / "m").glob("*.npy")]) > 2, 60)
    frozen.send_signal(signal.SIGKILL)  # ... and the other dies without writing
    frozen.wait()
    saver.join(120)
    assert isinstance(outcome["error"], (ConnectionLostError, StorageError)), outcome
    assert _save_files(tmp_path / "m") == published  # the orphans are swept away
    restored = c.load(tmp_path / "m", name="restored")
    assert c.matrix("restored").to_numpy().tobytes() == first.tobytes()
    assert len(set(restored.placement)) == 1  # both partitions, on the shard that is left


def _raises(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the test inspects it
        return e
    return None


def test_load_refuses_truncated_corrupt_and_incomplete_saves(fresh_cluster, tmp_path):
    c = fresh_cluster(1).client()
    c.create_matrix("m", 50, 8, "float32", init=init.uniform(seed=1))
    c.save("m", tmp_path / "good")

    def broken(name: str, damage) -> str:
        target = tmp_path / name
        shutil.copytree(tmp_path / "good", target)
        damage(target)
        return str(target)
    (part,) = [p.name for p in (tmp_path / "good").glob("*.npy")]
    manifest = json.loads((tmp_path / "good" / "model.json").read_text())

    def flip(d):  # one bit of one value, deep inside the data
        raw = bytearray((d / part).read_bytes())
        raw[-7] ^= 0x10
        (d / part).write_bytes(bytes(raw))
    cases = {
        "flipped": (flip, f"{part} does not match the checksum"),
        "truncated": (lambda d: (d / part).write_bytes((d / part).read_bytes()[:-100]),
                      "truncated"),
        "missing": (lambda d: (d / part).unlink(), f"cannot read .*{part}"),
        "empty-manifest": (lambda d: (d / "model.json").write_bytes(b""), "cannot read"),
        "no-tables": (lambda d: (d / "model.json").write_text(json.dumps(
            {k: v for k, v in manifest.items() if k != "tables"})), "tables"),
        "no-files": (lambda d: (d / "model.json").write_text(json.dumps(
            {**manifest, "files": []})), "no file for partitions"),
        "other-save": (lambda d: (d / "model.json").write_text(json.dumps(
            {**manifest, "save_id": "0" * 16})), "not a file of save"),
        "old-format": (lambda d: (d / "model.json").write_text(json.dumps(
            {**manifest, "format": 1})), "format 1"),
    }
    for name, (damage, message) in cases.items():
        with pytest.raises(StorageError, match=message):
            c.load(broken(name, damage), name=name)
    assert [m["name"] for m in c.status()["models"]] == ["m"]  # nothing half-loaded
    with pytest.raises(StorageError, match="holds no saved model"):
        c.load(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="directory path"):
        c.save("m", None)
    c.load(tmp_path / "good", name="fine")  # the intact save still loads
    np.testing.assert_array_equal(c.matrix("fine").to_numpy(), c.matrix("m").to_numpy())


def test_stray_files_never_mix_into_a_load_and_the_next_save_sweeps_them(fresh_cluster, tmp_path):
    c = fresh_cluster(1).client()
    m = c.create_matrix("m", 20, 3, "int64")
    m.push_rows([1], [[1, 2, 3]])
    c.save("m", tmp_path / "m")
    stray = ["values.part0.0123456789abcdef.npy", ".values.part0.0123456789abcdef.npy.tmp99",
             ".model.json.tmp42"]
    for name in stray:  # what a save killed mid-write leaves behind
        with open(tmp_path / "m" / name, "wb") as f:
            np.save(f, np.full((20, 3), 9))
    assert set(stray) <= set(_save_files(tmp_path / "m"))
    c.load(tmp_path / "m", name="copy")
    np.testing.assert_array_equal(c.matrix("copy").pull_rows([1, 0]), [[1, 2, 3], [0, 0, 0]])
    mine = tmp_path / "m" / "notes.txt"
    mine.write_text("not psframework's")
    c.save("m", tmp_path / "m")
    left = _save_files(tmp_path / "m")
    assert not set(stray) & set(left) and "notes.txt" in left and len(left) == 3

"""A model an estimator trains on the parameter server, from its creation to the end of
fit — what every PS estimator shares about faults:

- it is created with the estimator's `replicas` (2: a backup of every partition, so that
  a shard lost mid-fit costs nothing);
- every `checkpointInterval` epochs it is checkpointed (as ALS checkpoints every
  `checkpointInterval` iterations to the SparkContext's checkpoint directory), with the
  number of epochs done written beside the checkpoint;
- `resumeFrom` (a checkpoint directory) starts it from that checkpoint, at its epoch;
- if fit fails, the model is not destroyed: the error gets a note saying where it is
  (a separate cluster keeps it) and where its last checkpoint is, and how to resume;
- if it fails because the executors' Python cannot run the job (a module it cannot
  import), the error raised is an ExecutorEnvironmentError saying what to change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from psframework.errors import ConfigError, PSError, StorageError
from psframework.spark.interpreter import executor_environment_error
from psframework.storage import files

__all__ = ["Training", "checkpoint_settings", "EPOCHS_FILE"]

EPOCHS_FILE = "epochs.json"  # beside a checkpoint's manifest: how many epochs it holds


def add_note(error: BaseException, note: str) -> None:
    """`error.add_note(note)` on Python 3.11+; on 3.10, which has no add_note, the note is
    kept in `__notes__` as 3.11 keeps it (where 3.10's traceback does not print it)."""
    if sys.version_info >= (3, 11):
        error.add_note(note)
    else:
        setattr(error, "__notes__", [*getattr(error, "__notes__", []), note])


def checkpoint_settings(spark: Any, interval: int | None) -> dict:
    """The integrated cluster's checkpoint_dir: the SparkContext's checkpoint directory
    (sc.setCheckpointDir), when the estimator checkpoints at all."""
    if not interval:
        return {}
    where = spark.sparkContext.getCheckpointDir()
    if where is None:
        raise ConfigError("checkpointInterval needs a checkpoint directory: call "
                          "spark.sparkContext.setCheckpointDir(DIR) first (a local or mounted "
                          "path every executor can write, as for ALS)")
    if "://" in where and not where.startswith("file:"):
        raise ConfigError(f"psframework checkpoints to local or mounted paths, not {where!r}")
    return {"checkpoint_dir": where.removeprefix("file://").removeprefix("file:")}


class Training:
    """`with Training(ps, name, type, config, ...) as t:` — `t.first` is the first epoch
    to run; call `t.epoch_done(epoch)` after each. `resumable`: the estimator has a
    checkpointInterval (a failed fit's note then says to set it)."""

    def __init__(self, ps: Any, name: str, type_: str, config: dict, *, replicas: int = 1,
                 every: int | None = None, resume_from: str | None = None,
                 what: str = "fit", resumable: bool = False) -> None:
        self.ps, self.name, self.type, self.config = ps, name, type_, config
        self.replicas, self.every, self.resume_from, self.what = replicas, every, resume_from, what
        self.resumable = resumable or every is not None
        self.first = 0
        self.last: tuple[int, str] | None = None  # (epochs done, directory) of the last checkpoint

    def __enter__(self) -> "Training":
        client = self.ps.client()
        if self.every and client.status().get("checkpoint_dir") is None:
            raise ConfigError(f"checkpointInterval: the parameter server at {self.ps.master} "
                              "has no checkpoint_dir; start its master with --checkpoint-dir "
                              "DIR (a directory every server can reach)")
        if self.resume_from is None:
            client.create_model(self.name, self.type, self.config, replicas=self.replicas)
            return self
        directory = Path(self.resume_from)
        manifest = files.read_manifest(directory)
        try:
            done = json.loads((directory / EPOCHS_FILE).read_text())
        except (OSError, ValueError):
            raise StorageError(f"{directory} is not a checkpoint a fit wrote (no readable "
                               f"{EPOCHS_FILE}); resumeFrom takes the directory a failed fit "
                               "named") from None
        if done.get("save_id") != manifest.save_id or manifest.type != self.type:
            raise StorageError(f"{directory}: its {EPOCHS_FILE} belongs to another checkpoint "
                               "than the one published there; resume from a complete one")
        if manifest.config != self.config:
            raise ConfigError(f"resumeFrom={directory} holds a {manifest.type} model of "
                              "another shape or configuration than this fit would train; "
                              "fit on the same data with the same parameters")
        client.load(directory, self.name, replicas=self.replicas)
        self.first = int(done["epochs"])
        self.last = (self.first, str(directory))
        return self

    def epoch_done(self, epoch: int) -> None:
        """After epoch `epoch` (0-based): checkpoint if one is due."""
        if not self.every or (epoch + 1) % self.every:
            return
        done = self.ps.client().checkpoint(self.name)
        directory = Path(done["path"])
        tmp = directory / f".{EPOCHS_FILE}.tmp"
        tmp.write_text(json.dumps({"epochs": epoch + 1, "save_id": done["save_id"]}))
        tmp.replace(directory / EPOCHS_FILE)
        self.last = (epoch + 1, str(directory))

    def __exit__(self, kind, error, tb) -> None:
        if error is None or not isinstance(error, Exception):
            return
        where = []
        if not self.ps.integrated:
            where.append(f"the model {self.name!r} is left on the parameter server at "
                         f"{self.ps.master} as it was (Client({self.ps.master!r})"
                         f".destroy({self.name!r}) frees it)")
        if self.last is not None:
            where.append(f"its last checkpoint, after epoch {self.last[0]}, is in "
                         f"{self.last[1]}: fit again with resumeFrom={self.last[1]!r} to "
                         "go on from there")
        elif self.every is None and self.resumable:
            where.append("set checkpointInterval (and sc.setCheckpointDir) so that a failed "
                         f"{self.what} can resume")
        note = f"psframework: {self.what} failed; " + "; ".join(where)
        spark = getattr(self.ps, "spark", None)
        if spark is not None and not isinstance(error, (PSError, MemoryError)):
            environment = executor_environment_error(error, spark.sparkContext, self.what)
            if environment is not None:  # what it is, rather than Spark's traceback
                add_note(environment, note)
                raise environment from error
        add_note(error, note)

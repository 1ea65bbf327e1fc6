"""What shards tell the master, as strict schemas: every field of every server-to-master
message is checked (type, range, size) before anything of it is stored, so one malformed
message is refused alone and can never break the master for everyone else."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from psframework.config import parse_address
from psframework.errors import ConfigError, ProtocolError

__all__ = ["Registration", "Heartbeat", "ShardStats", "Hosted", "OpSummary", "TrainingReport",
           "MAX_TRAINING_VALUES", "parse"]

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Count = Annotated[int, Field(ge=0, lt=1 << 63)]
Small = Annotated[str, StringConstraints(max_length=256)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
MAX_ENTRIES = 65_536  # models hosted, ops counted: far more than any real shard has
MAX_TRAINING_VALUES = 64  # training gauges kept per model


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Hosted(_Strict):
    """One model a shard hosts: its incarnation and the partitions it holds."""

    uid: Small
    parts: Annotated[list[Count], Field(max_length=MAX_ENTRIES)]


class Registration(_Strict):
    """`register`: where the shard listens, and, when it registers again, its name and
    what it hosts — so that the master can reconcile them with the catalog."""

    address: Small
    name: Name | None = None
    hosts: Annotated[dict[Small, Hosted], Field(max_length=MAX_ENTRIES)] = {}
    machine: Small = ""  # shards with the same machine id share its memory
    memory: Count = 0  # the machine's physical memory, bytes
    memory_limit: Count | None = None  # set explicitly on the shard (PSF_MEMORY_LIMIT)


class ModelUsage(_Strict):
    bytes: Count = 0
    parts: Annotated[list[Count], Field(max_length=MAX_ENTRIES)] = []


class OpSummary(_Strict):
    """One op's requests, as metrics.RequestTimes.summary gives them."""

    count: Count = 0
    rate: Seconds = 0.0  # requests per second, recently
    mean: Seconds | None = None  # seconds
    p50: Seconds | None = None
    p99: Seconds | None = None


class OnceWindow(_Strict):
    entries: Count = 0
    bytes: Count = 0


class ShardStats(_Strict):
    """What a heartbeat reports; `psframework status` shows it."""

    pid: Count | None = None
    bytes: Count = 0
    models: Annotated[dict[Small, ModelUsage], Field(max_length=MAX_ENTRIES)] = {}
    ops: Annotated[dict[Small, Count], Field(max_length=MAX_ENTRIES)] = {}
    udf_seconds: Annotated[dict[Small, Annotated[float, Field(ge=0, allow_inf_nan=False)]],
                           Field(max_length=MAX_ENTRIES)] = {}
    duplicates: Count = 0
    bytes_in: Count = 0
    bytes_out: Count = 0
    connections: Count = 0
    requests: Annotated[dict[Small, OpSummary], Field(max_length=MAX_ENTRIES)] = {}
    once: OnceWindow = OnceWindow()
    rss: Count | None = None
    metrics: Small | None = None  # HOST:PORT of its Prometheus endpoint


class TrainingReport(_Strict):
    """`report`: the latest values of a training loop's gauges for one model (loss,
    pairs per second, ...), by name."""

    values: Annotated[dict[Name, Annotated[float, Field(allow_inf_nan=False)]],
                      Field(min_length=1, max_length=MAX_TRAINING_VALUES)]


class Heartbeat(_Strict):
    name: Name
    stats: ShardStats = ShardStats()


def parse(schema: type[_Strict], args: Any, op: str):
    """`args` as `schema`, or a ProtocolError that names the bad fields."""
    try:
        msg = schema.model_validate(args)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or op}: {err['msg']}"
                             for err in e.errors()[:5])
        raise ProtocolError(f"malformed {op} message: {problems}", op=op) from None
    if isinstance(msg, Registration):
        try:
            parse_address(msg.address)
        except ConfigError as e:
            raise ProtocolError(f"malformed register message: {e.message}", op=op) from None
    return msg

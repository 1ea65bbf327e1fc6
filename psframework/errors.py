"""Every error psframework raises, in one hierarchy.

    PSError                      base: carries model, op and shard when known
    ├── ConfigError              a setting or argument is wrong before anything is sent
    │   └── ExecutorEnvironmentError  Spark's Python workers cannot run psframework
    ├── ProtocolError            truncated, oversized or garbage frames; version mismatch
    ├── AuthError                the shared secret is missing or wrong (either side)
    ├── ConnectionLostError      a peer went away or could not be reached
    ├── RequestTimeoutError      no answer within the request timeout (also a TimeoutError)
    └── RemoteError              the server failed the request
        ├── UnknownModelError    no such model, table or op on the cluster
        │   └── MovedError       not (or no longer) on this shard: look the model up again
        ├── ModelExistsError     a model of that name is already in the catalog
        ├── ShapeError           wrong shape or out-of-range index
        ├── DTypeError           wrong dtype
        ├── StorageError         saving or loading partitions failed
        └── StaleRequestError    a once-only request came after the server forgot it

Errors raised on a server travel back as an ERROR reply with the class name, and the
client re-raises the same class, so `except ShapeError` works whether the check happened
locally or on a shard. Messages read like advice: what went wrong and what to do.
"""

from __future__ import annotations

import builtins

__all__ = [
    "PSError",
    "ConfigError",
    "ExecutorEnvironmentError",
    "ProtocolError",
    "AuthError",
    "ConnectionLostError",
    "RequestTimeoutError",
    "RemoteError",
    "UnknownModelError",
    "MovedError",
    "ModelExistsError",
    "ShapeError",
    "DTypeError",
    "StorageError",
    "StaleRequestError",
    "error_from_wire",
]


class PSError(Exception):
    """Base class. `model`, `op` and `shard` say where it happened, when known;
    `from_server` that a server sent it (so the request did reach a server and failed
    there), rather than that this process raised it."""

    from_server = False

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        op: str | None = None,
        shard: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.op = op
        self.shard = shard

    def __str__(self) -> str:
        where = ", ".join(
            f"{k}={v}" for k, v in (("model", self.model), ("op", self.op), ("shard", self.shard)) if v
        )
        return f"{self.message} [{where}]" if where else self.message

    def __reduce__(self):  # keep context fields through pickling (Spark ships exceptions)
        return (_rebuild, (type(self), self.message, self.model, self.op, self.shard))

    def to_wire(self) -> dict:
        return {"type": type(self).__name__, "message": self.message, "model": self.model,
                "op": self.op, "shard": self.shard}


def _rebuild(cls, message, model, op, shard):
    return cls(message, model=model, op=op, shard=shard)


class ConfigError(PSError):
    """A setting or argument is invalid; nothing was sent."""


class ExecutorEnvironmentError(ConfigError):
    """Spark's Python workers could not run a psframework job: they cannot import a module
    (`module`), or their interpreter (`interpreter`) is missing or another Python version.
    `setting` is what chose that interpreter (`spark.pyspark.python` or `PYSPARK_PYTHON`),
    None if neither did; the message says what to change. Raised on the driver, from
    what Spark reported; never sent by a server."""

    def __init__(self, message: str, *, module: str | None = None,
                 interpreter: str | None = None, setting: str | None = None) -> None:
        super().__init__(message)
        self.module, self.interpreter, self.setting = module, interpreter, setting

    def __reduce__(self):
        return (_rebuild_environment, (self.message, self.module, self.interpreter,
                                       self.setting))


def _rebuild_environment(message, module, interpreter, setting):
    return ExecutorEnvironmentError(message, module=module, interpreter=interpreter,
                                    setting=setting)


class ProtocolError(PSError):
    """A frame is truncated, oversized or not a psframework frame, or versions differ."""


class AuthError(PSError):
    """The shared secret is missing or wrong."""


class ConnectionLostError(PSError, ConnectionError):
    """The peer closed the connection, died, or refused to connect."""


class RequestTimeoutError(PSError, builtins.TimeoutError):
    """No reply arrived within the request timeout."""


class RemoteError(PSError):
    """The server could not carry out the request; the server itself keeps running."""


class UnknownModelError(RemoteError):
    """The model, table, op or plugin does not exist on the cluster."""


class MovedError(UnknownModelError):
    """The model or partition is not (or no longer) on the shard asked: it failed over, or
    the shard may have been declared dead. Clients look the model up again and resend."""


class ModelExistsError(RemoteError):
    """A model of that name is already in the catalog."""


class ShapeError(RemoteError, ValueError):
    """An array has the wrong shape or an index is out of range."""


class DTypeError(RemoteError, TypeError):
    """An array has the wrong dtype."""


class StorageError(RemoteError):
    """Saving or loading partitions failed."""


class StaleRequestError(RemoteError):
    """A once-only request arrived after the server had stopped remembering it (the
    client had moved past it, or the exactly-once window was full): it was not applied
    now, and whether an earlier copy of it was applied is unknown."""


_BY_NAME = {cls.__name__: cls for cls in (
    ConfigError, ProtocolError, AuthError, ConnectionLostError, RequestTimeoutError,
    RemoteError, UnknownModelError, MovedError, ModelExistsError, ShapeError, DTypeError,
    StorageError, StaleRequestError,
)}


def error_from_wire(fields: dict) -> PSError:
    """Rebuild the typed error a server sent; unknown types become RemoteError."""
    cls = _BY_NAME.get(str(fields.get("type")), RemoteError)
    err = cls(
        str(fields.get("message", "remote error")),
        model=_text(fields.get("model")),
        op=_text(fields.get("op")),
        shard=_text(fields.get("shard")),
    )
    err.from_server = True
    return err


def _text(value: object) -> str | None:
    return None if value is None else str(value)[:256]

"""Settings, from (highest first) explicit flags, `PSF_*` environment variables, an
optional TOML file, and the defaults below."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

from psframework.errors import ConfigError
from psframework.protocol import Limits

__all__ = ["Settings", "load_settings", "parse_address", "DEFAULT_MASTER_PORT"]

DEFAULT_MASTER_PORT = 13370


class Settings(BaseSettings):
    """Every knob of a master, shard or client. Environment: PSF_<NAME>, e.g. PSF_SECRET."""

    model_config = SettingsConfigDict(env_prefix="PSF_", extra="forbid")

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int | None = Field(None, ge=0, le=65535, description="port to listen on (0: any "
                             f"free port; default {DEFAULT_MASTER_PORT} for a master, 0 otherwise)")
    advertise: str | None = Field(None, description="HOST or HOST:PORT that clients should use "
                                  "to reach this server (default: --host and the bound port; "
                                  "the hostname when listening on 0.0.0.0)")
    master: str | None = Field(None, description="the master's HOST:PORT")
    secret: SecretStr | None = Field(None, description="shared secret every connection proves")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_frame_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024)
    max_header_bytes: int = Field(1024 * 1024, ge=4096)
    chunk_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024, description="clients split big "
                             "pulls and pushes into requests of about this size, so that "
                             "servers, network and client work on them in a pipeline")
    request_timeout: float = Field(30.0, gt=0, description="seconds to wait for one reply")
    connect_timeout: float = Field(5.0, gt=0)
    retry_deadline: float = Field(10.0, ge=0, description="seconds to keep retrying a request "
                                  "whose connection failed")
    heartbeat_interval: float = Field(0.25, gt=0, description="seconds between a shard's "
                                      "heartbeats (sent from their own thread)")
    heartbeat_timeout: float = Field(1.5, gt=0, description="a shard silent this long is "
                                     "declared dead and its partitions fail over (a shard "
                                     "refuses writes a beat before, so it never takes one "
                                     "the master has moved)")
    master_grace: float = Field(10.0, gt=0, description="a shard exits when the master is "
                                "unreachable this long")
    forget_after: float = Field(600.0, gt=0, description="the master forgets a shard that "
                                "has been dead this long (and its name)")
    dedup_window: int = Field(100_000, ge=1, description="replies of once-only requests a "
                              "server remembers at most")
    dedup_bytes: int = Field(64 << 20, ge=0, description="at most this many bytes in the "
                             "remembered replies of once-only requests")
    handshake_timeout: float = Field(10.0, gt=0, description="a connection that has not "
                                     "completed its handshake this long is closed")
    max_connections: int = Field(1024, ge=1, description="a server refuses connections "
                                 "beyond this many open ones")
    memory_limit: int | None = Field(None, ge=0, description="bytes of partitions a shard "
                                     "may hold (default: half of the machine's memory, "
                                     "shared by the shards on it)")
    tls_cert: Path | None = Field(None, description="PEM certificate chain: servers serve "
                                  "TLS with it; a client presents it if the server asks")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_ca: Path | None = Field(None, description="PEM CA bundle: clients use TLS and verify "
                                "servers against it; servers then require client "
                                "certificates signed by it")
    tls_check_hostname: bool = Field(True, description="clients check that a server's "
                                     "certificate names the host they connect to")
    replicas: int = Field(1, ge=1, le=8, description="copies of every partition of a new "
                          "model (2: a backup on another shard, so that losing any one shard "
                          "loses no acknowledged push)")
    checkpoint_dir: Path | None = Field(None, description="where the master has the shards "
                                        "checkpoint models (a directory every server can "
                                        "reach); partitions that lose every copy are "
                                        "restored from there")
    checkpoint_interval: float | None = Field(None, gt=0, description="seconds between "
                                              "checkpoints of every model (with "
                                              "checkpoint_dir; a model may set its own)")
    state_dir: Path | None = Field(None, description="where the master keeps its catalog, "
                                   "so that a restarted master knows the models and shards")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="serve Prometheus "
                                     "metrics over HTTP on this port (0: any free port; "
                                     "None: no metrics endpoint); see docs/metrics.md")
    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoint listens "
                              "on (it has no authentication: it shows numbers and model "
                              "names to whoever reaches it)")
    threads: int = Field(2, ge=1, description="shard threads for GIL-free UDFs")
    inline_below: int = Field(256 * 1024, ge=0, description="a threaded UDF whose request "
                              "arrays are smaller than this many bytes runs inline: the "
                              "hand-off to a thread costs more than such small work")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def limits(self) -> Limits:
        return Limits(self.max_frame_bytes, min(self.max_header_bytes, self.max_frame_bytes))

    def advertised(self, bound_port: int) -> str:
        """The address this server tells others, given the port it is bound to."""
        a = self.advertise
        if a and ("]:" in a or a.count(":") == 1):  # HOST:PORT or [V6]:PORT
            host, port = parse_address(a)
            return f"{host}:{port}"
        host = self.advertise or (socket.gethostname() if self.host in ("0.0.0.0", "::")
                                  else self.host)
        return f"{host}:{bound_port}"

    @property
    def secret_bytes(self) -> bytes | None:
        return self.secret.get_secret_value().encode() if self.secret else None

    @model_validator(mode="after")
    def _tls_pairs(self) -> "Settings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {path} is not a file")
        return self

    def server_tls(self) -> ssl.SSLContext | None:
        """The TLS context servers listen with (None: plain TCP). With tls_ca, servers
        also require client certificates signed by it (mutual TLS)."""
        if self.tls_cert is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.tls_cert, self.tls_key)
        if self.tls_ca is not None:
            ctx.load_verify_locations(self.tls_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_tls(self) -> ssl.SSLContext | None:
        """The TLS context clients (and shards, towards the master) connect with."""
        if self.tls_ca is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.tls_ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = self.tls_check_hostname
        if self.tls_cert is not None:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx


def load_settings(config_file: str | Path | None = None, **flags: Any) -> Settings:
    """Settings with `flags` (None values ignored) over env over the TOML file."""
    flags = {k: v for k, v in flags.items() if v is not None}
    cls = Settings
    if config_file is not None:
        if not Path(config_file).is_file():
            raise ConfigError(f"config file {config_file} does not exist")

        class FileSettings(Settings):
            model_config = SettingsConfigDict(**{**Settings.model_config,
                                                 "toml_file": config_file})
        cls = FileSettings
    try:
        return cls(**flags)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}"
                             for err in e.errors())
        raise ConfigError(f"invalid settings: {problems}") from None


def parse_address(address: str, default_port: int = DEFAULT_MASTER_PORT) -> tuple[str, int]:
    """'host:port' (or 'host', or '[v6]:port') -> (host, port)."""
    if not isinstance(address, str) or not address:
        raise ConfigError(f"expected an address HOST:PORT, got {address!r}")
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:
        host, port = address, str(default_port)
    host = host.strip("[]")
    try:
        p = int(port)
        if not 0 < p < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError(f"bad port in address {address!r}; expected HOST:PORT") from None
    return host, p

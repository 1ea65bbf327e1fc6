"""`psframework serve master|shard|local` and `psframework status`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Sequence

from psframework.config import DEFAULT_MASTER_PORT, load_settings
from psframework.errors import PSError

__all__ = ["main"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (master default 13370; 0: any)")
    p.add_argument("--advertise", help="host clients should use to reach this server")
    p.add_argument("--master", help="the master's HOST:PORT")
    p.add_argument("--secret", help="shared secret (better: set PSF_SECRET)")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve TLS with it (servers), "
                   "or present it (clients)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-ca", help="PEM CA bundle: verify servers (clients) and require "
                   "client certificates (servers)")
    p.add_argument("--config", help="TOML file with settings (keys as in PSF_* without prefix)")
    p.add_argument("--log-level", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psframework", description="Parameter server.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a master, a shard, or a whole local cluster")
    serve.add_argument("role", choices=["master", "shard", "local"])
    _common(serve)
    serve.add_argument("--shards", type=int, default=2, help="shards for `local` (default 2)")
    serve.add_argument("--state-dir", help="master: keep the catalog here, so that a restarted "
                       "master knows its models and shards")
    serve.add_argument("--checkpoint-dir", help="master: checkpoint models here (a directory "
                       "every server can reach)")
    serve.add_argument("--checkpoint-interval", type=float,
                       help="master: seconds between checkpoints of every model")
    serve.add_argument("--replicas", type=int, help="master: copies of every partition of a "
                       "new model (default 1; 2 survives the loss of any one shard)")
    serve.add_argument("--watch-stdin", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # LocalCluster's
    status = sub.add_parser("status", help="print servers, models, partitions and memory")
    _common(status)
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")
    return parser


def _settings(args: argparse.Namespace):
    serving = {k: getattr(args, k, None) for k in ("state_dir", "checkpoint_dir",
                                                   "checkpoint_interval", "replicas")}
    return load_settings(args.config, host=args.host, port=args.port, advertise=args.advertise,
                         master=args.master, secret=args.secret, log_level=args.log_level,
                         tls_cert=args.tls_cert, tls_key=args.tls_key, tls_ca=args.tls_ca,
                         **serving)


def _serve(args: argparse.Namespace) -> int:
    from psframework.runner import configure_logging, exit_now, serve_forever
    settings = _settings(args)
    configure_logging(settings.log_level)
    if args.role == "shard" and not settings.master:
        raise PSError("a shard needs --master HOST:PORT (or PSF_MASTER)")
    if args.role in ("master", "shard"):
        serve_forever(args.role, settings, watch_stdin=args.watch_stdin,
                      listen_fd=args.listen_fd)
        exit_now(0)
    from psframework.cluster import LocalCluster
    secret = settings.secret.get_secret_value() if settings.secret else None
    port = DEFAULT_MASTER_PORT if settings.port is None else settings.port
    # everything else that was set (by file or flag) reaches the servers as PSF_* variables
    rest = settings.model_dump(exclude={"host", "port", "secret", "log_level", "master"},
                               exclude_defaults=True)
    with LocalCluster(args.shards, secret=secret, host=settings.host, port=port,
                      log_level=settings.log_level, **rest) as cluster:
        print(f"psframework cluster ready: master at {cluster.address} with {args.shards} "
              "shards (Ctrl-C stops it)", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):  # explicit: SIGINT may have been
            signal.signal(sig, _interrupt)           # ignored by whoever started us
        try:
            while cluster.master_process is not None and cluster.master_process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    print("psframework cluster stopped", flush=True)
    return 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def format_status(st: dict) -> str:
    servers = st["servers"]
    lines = [f"master {st['address']}",
             f"servers: {sum(s['alive'] for s in servers)} alive of {len(servers)}"]
    for s in servers:
        lines.append(f"  {s['name']:<10} {s['address']:<22} {'alive' if s['alive'] else 'DEAD':<5} "
                     f"seen {s['last_seen']:.1f}s ago  {_mib(s['bytes'])}  "
                     f"{sum(s['ops'].values())} ops")
    lines.append(f"models: {len(st['models'])}")
    for m in st["models"]:
        lines.append(f"  {m['name']} (type {m['type']}, {len(m['placement'])} partitions)")
        ckpt = m.get("checkpoint")
        age = f"{ckpt['age']:.0f}s old" if ckpt else "none"
        lines.append(f"    replicas: {m.get('replicas', 1)}  checkpoint: {age}"
                     f"  recoveries: {m.get('recoveries', 0)}"
                     + (f"  DEGRADED (no backup yet): {m['degraded']}" if m.get("degraded") else "")
                     + (f"  LOST (no copy left): {m['lost']}" if m.get("lost") else ""))
        for t in m["tables"]:
            shape = "x".join(map(str, t["shape"]))
            lines.append(f"    {t['name']}: {t['dtype']}[{shape}] by {t['partition_by']} "
                         f"({t['partitioner']}, {t['parts']} parts, aggregate {t['aggregate']})")
        backups = m.get("backups") or [[] for _ in m["placement"]]
        lines.append("    partitions: " + ", ".join(
            f"{p}->{s}" + "".join(f"+{b}" for b in backups[p]) for p, s in enumerate(m["placement"])))
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    from psframework.client import AsyncClient
    from psframework.transport import run
    settings = _settings(args)
    if not settings.master:
        raise PSError("status needs --master HOST:PORT (or PSF_MASTER)")

    async def fetch() -> dict:
        async with AsyncClient(settings.master, settings) as c:
            return await c.status()
    st = run(fetch())
    print(json.dumps(st, indent=2) if args.json else format_status(st))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _serve(args) if args.command == "serve" else _status(args)
    except PSError as e:
        print(f"psframework: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""`psframework serve master|shard|local`, `psframework status` and `psframework stop`.
Every flag is described in docs/cli.md."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time
from typing import Sequence

from psframework.config import DEFAULT_MASTER_PORT, Settings, load_settings, parse_address
from psframework.errors import PSError, RequestTimeoutError
from psframework.metrics import BOUNDS

__all__ = ["main", "format_status"]

DEFAULT_MASTER = f"127.0.0.1:{DEFAULT_MASTER_PORT}"
ERROR_EXIT = 2  # what a failed command returns (argparse's usage errors return 2 too)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("psframework")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from psframework import __version__
        return __version__


# -- flags -------------------------------------------------------------------------------
def _connection_flags(p: argparse.ArgumentParser, *, server: bool) -> None:
    """What every command needs to reach the cluster (a server: to reach its master)."""
    g = p.add_argument_group("connection")
    g.add_argument("--master", help="the master's HOST:PORT" + (
        "" if server else f" (default {DEFAULT_MASTER}, or PSF_MASTER)"))
    g.add_argument("--secret", help="shared secret (better: set PSF_SECRET)")
    g.add_argument("--tls-ca", help="PEM CA bundle: verify servers" + (
        " and require client certificates" if server else ""))
    g.add_argument("--tls-cert", help="PEM certificate chain: serve TLS with it" if server
                   else "PEM client certificate, for servers that require one")
    g.add_argument("--tls-key", help="PEM private key of --tls-cert")
    g.add_argument("--config", help="TOML file with settings (keys as in PSF_* without prefix)")


def _server_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, help="port to listen on (master default "
                   f"{DEFAULT_MASTER_PORT}; 0: any)")
    g.add_argument("--advertise", help="HOST[:PORT] others should use to reach this server")
    g.add_argument("--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    g.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port "
                   "(0: any free one; `local`: the master on PORT, shard i on PORT+1+i)")
    g.add_argument("--metrics-host", help="address the metrics endpoint listens on "
                   "(default 127.0.0.1)")
    m = p.add_argument_group("master")
    m.add_argument("--state-dir", help="keep the catalog here, so that a restarted master "
                   "knows its models and shards")
    m.add_argument("--checkpoint-dir", help="checkpoint models here (a directory every "
                   "server can reach)")
    m.add_argument("--checkpoint-interval", type=float,
                   help="seconds between checkpoints of every model")
    m.add_argument("--replicas", type=int, help="copies of every partition of a new model "
                   "(default 1; 2 survives the loss of any one shard)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psframework", description="Parameter server.")
    parser.add_argument("--version", action="version", version=f"psframework {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a master, a shard, or a whole local cluster",
                           description="Run a master, a shard, or a whole local cluster "
                           "until Ctrl-C, SIGTERM or `psframework stop`.")
    serve.add_argument("role", choices=["master", "shard", "local"])
    serve.add_argument("--shards", type=int, default=2, help="shards for `local` (default 2)")
    _server_flags(serve)
    _connection_flags(serve, server=True)
    serve.add_argument("--watch-stdin", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # LocalCluster's

    status = sub.add_parser("status", help="print servers, models, requests, memory and "
                            "training gauges", description="Print the cluster's servers, "
                            "models, partitions, request rates and latencies, memory and "
                            "training gauges.")
    status.add_argument("--json", action="store_true", help="print the raw status as JSON "
                        "(with --watch: one line per status)")
    status.add_argument("--watch", nargs="?", type=float, const=2.0, metavar="SECONDS",
                        help="print it again every SECONDS (default 2) until Ctrl-C")
    _connection_flags(status, server=False)

    stop = sub.add_parser("stop", help="stop the whole cluster: every shard, then the master",
                          description="Stop the whole cluster gracefully: the master stops "
                          "every shard, then itself; returns once the master's port is "
                          "closed. Models are not saved: save them first.")
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the "
                      "master to go (default 30)")
    _connection_flags(stop, server=False)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    names = ("host", "port", "advertise", "master", "secret", "log_level", "tls_cert",
             "tls_key", "tls_ca", "state_dir", "checkpoint_dir", "checkpoint_interval",
             "replicas", "metrics_port", "metrics_host")
    return load_settings(args.config, **{k: getattr(args, k, None) for k in names})


# -- serve -------------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    from psframework.runner import check_package, configure_logging, exit_now, serve_forever
    check_package()
    settings = _settings(args)
    configure_logging(settings.log_level)
    if args.role == "shard" and not settings.master:
        raise PSError("a shard needs --master HOST:PORT (or PSF_MASTER)")
    if args.role in ("master", "shard"):
        serve_forever(args.role, settings, watch_stdin=args.watch_stdin,
                      listen_fd=args.listen_fd)
        exit_now(0)
    return _serve_local(args, settings)


def _serve_local(args: argparse.Namespace, settings: Settings) -> int:
    from psframework.cluster import LocalCluster

    secret = settings.secret.get_secret_value() if settings.secret else None
    port = DEFAULT_MASTER_PORT if settings.port is None else settings.port
    # everything else that was set (by file or flag) reaches the servers as PSF_* variables
    rest = settings.model_dump(exclude={"host", "port", "secret", "log_level", "master"},
                               exclude_defaults=True)
    with LocalCluster(args.shards, secret=secret, host=settings.host, port=port,
             log_level=settings.log_level, **rest) as cluster:
        print(f"psframework cluster ready: master at {cluster.address} with {args.shards} "
              "shards (Ctrl-C or `psframework stop` stops it)", flush=True)
        if settings.metrics_port:
            p = settings.metrics_port
            print(f"metrics: http://{settings.metrics_host}:{p}/metrics (master), ports "
                  f"{p + 1}-{p + args.shards} (shards)", flush=True)
        elif settings.metrics_port == 0:
            print("metrics: on free ports, listed by `psframework status`", flush=True)
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


# -- status ------------------------------------------------------------------------------
def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.2f}ms" if seconds < 1 else f"{seconds:.1f}s"


def _bound(seconds: float | None) -> str:
    """A latency histogram bucket's upper bound (None: beyond the last one)."""
    return f">{BOUNDS[-1]:g}s" if seconds is None else "\u2264" + _ms(seconds)


def _server_lines(s: dict, indent: str) -> list[str]:
    """A server's traffic, memory, exactly-once window and requests by op."""
    once = s.get("once") or {}
    lines = [f"{indent}in {_size(s.get('bytes_in', 0))}  out {_size(s.get('bytes_out', 0))}  "
             f"rss {_size(s.get('rss'))}  connections {s.get('connections', 0)}  "
             f"once-window {once.get('entries', 0)} ({_size(once.get('bytes', 0))})"
             + (f"  metrics http://{s['metrics']}/metrics" if s.get("metrics") else "")]
    for op, r in sorted((s.get("requests") or {}).items()):
        busy = r["rate"] > 0
        lines.append(f"{indent}{op:<14} {r['count']:>10} requests  {r['rate']:>9.1f}/s"
                     + (f"  mean {_ms(r['mean'])}  p50 {_bound(r['p50'])}  "
                        f"p99 {_bound(r['p99'])}" if busy else ""))
    return lines


def format_status(st: dict) -> str:
    servers = st["servers"]
    lines = [f"master {st['address']}"]
    if st.get("master"):
        lines += _server_lines(st["master"], "  ")
    lines.append(f"servers: {sum(s['alive'] for s in servers)} alive of {len(servers)}")
    for s in servers:
        lines.append(f"  {s['name']:<10} {s['address']:<22} {'alive' if s['alive'] else 'DEAD':<5} "
                     f"seen {s['last_seen']:.1f}s ago  {_mib(s['bytes'])}  "
                     f"{sum(s['ops'].values())} ops")
        if s["alive"]:
            lines += _server_lines(s, "    ")
    lines.append(f"models: {len(st['models'])}")
    for m in st["models"]:
        lines.append(f"  {m['name']} (type {m['type']}, {len(m['placement'])} partitions)")
        ckpt = m.get("checkpoint")
        age = f"{ckpt['age']:.0f}s old" if ckpt else "none"
        lines.append(f"    replicas: {m.get('replicas', 1)}  checkpoint: {age}"
                     f"  recoveries: {m.get('recoveries', 0)}"
                     + (f"  DEGRADED (no backup yet): {m['degraded']}" if m.get("degraded") else "")
                     + (f"  LOST (no copy left): {m['lost']}" if m.get("lost") else ""))
        training = m.get("training") or {}
        if training.get("values"):
            lines.append("    training: " + "  ".join(
                f"{k}={v:.6g}" for k, v in sorted(training["values"].items()))
                + f"  ({training['age']:.0f}s ago)")
        for t in m["tables"]:
            shape = "x".join(map(str, t["shape"]))
            lines.append(f"    {t['name']}: {t['dtype']}[{shape}] by {t['partition_by']} "
                         f"({t['partitioner']}, {t['parts']} parts, aggregate {t['aggregate']})")
        backups = m.get("backups") or [[] for _ in m["placement"]]
        lines.append("    partitions: " + ", ".join(
            f"{p}->{s}" + "".join(f"+{b}" for b in backups[p]) for p, s in enumerate(m["placement"])))
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    import asyncio

    from psframework.client import AsyncClient
    from psframework.transport import run
    settings = _settings(args)
    master = settings.master or DEFAULT_MASTER
    clear = args.watch is not None and not args.json and sys.stdout.isatty()

    def show(st: dict) -> None:
        if args.json:
            print(json.dumps(st, indent=None if args.watch is not None else 2), flush=True)
            return
        if clear:
            print("\x1b[H\x1b[2J", end="")
        elif args.watch is not None:
            print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}")
        print(format_status(st), flush=True)

    async def fetch() -> None:
        async with AsyncClient(master, settings) as c:
            while True:
                show(await c.status())
                if args.watch is None:
                    return
                await asyncio.sleep(args.watch)
    if args.watch is not None and not args.watch > 0:
        raise PSError(f"--watch takes a number of seconds > 0, got {args.watch:g}")
    try:
        run(fetch())
    except KeyboardInterrupt:  # the way out of --watch
        pass
    return 0


# -- stop --------------------------------------------------------------------------------
def _stop(args: argparse.Namespace) -> int:
    from psframework.transport import connect, run
    settings = _settings(args)
    master = settings.master or DEFAULT_MASTER
    host, port = parse_address(master)

    async def shutdown() -> dict:
        conn = await connect(host, port, limits=settings.limits, secret=settings.secret_bytes,
                             timeout=settings.connect_timeout, ssl_context=settings.client_tls())
        try:
            return (await conn.request("shutdown", timeout=args.timeout)).args
        finally:
            conn.close()
    reply = run(shutdown())
    deadline = time.monotonic() + args.timeout
    while _accepts(host, port):
        if time.monotonic() > deadline:
            raise RequestTimeoutError(f"the master at {master} was told to stop but still "
                                      f"accepts connections after {args.timeout:g}s")
        time.sleep(0.05)
    for name, why in sorted(reply.get("failed", {}).items()):
        print(f"psframework: warning: shard {name} could not be told to stop ({why}); it "
              "exits by itself once the master has been gone for master_grace seconds",
              file=sys.stderr)
    shards = reply.get("shards", [])
    print(f"psframework cluster at {master} stopped: the master and {len(shards)} shards"
          + (f" ({', '.join(shards)})" if shards else ""), flush=True)
    return 0


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = {"serve": _serve, "status": _status, "stop": _stop}[args.command]
    try:
        return command(args)
    except PSError as e:
        print(f"psframework: error: {e}", file=sys.stderr)
        return ERROR_EXIT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

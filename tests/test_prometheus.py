"""The Prometheus endpoints of real masters and shards, scraped over HTTP: each number
against what the test itself did (requests sent, partitions placed, gauges reported) or
measured independently (the process's resident memory from /proc)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from psframework import Client, ConfigError, LocalCluster, UnknownModelError, init
from conftest import PLUGIN_ENV, listening, wait_until

CLI = str(Path(sys.executable).parent / "psframework")
PATIENT = {"PSF_HEARTBEAT_TIMEOUT": "5"}  # a busy machine does not kill our shards


def scrape(address: str) -> dict:
    """{(sample name, ((label, value), ...)): value} of one endpoint."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, sample: str, /, **labels: str) -> float | None:
    return samples.get((sample, tuple(sorted(labels.items()))))


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_shard_and_its_master_count_what_they_served(cli):
    master = cli("serve", "master", "--port", "0", "--metrics-port", "0", env=PATIENT)
    shard = cli("serve", "shard", "--master", master.address, "--metrics-port", "0",
                env=PATIENT)
    with Client(master.address) as c:
        st = wait_until(lambda: (s := c.status())["servers"] and s["servers"][0]["metrics"] and s)
        at_master, (server,) = st["master"]["metrics"], st["servers"]
        at_shard = server["metrics"]
        v = c.create_vector("v", 10_000, parts=2, init=init.uniform(-1, 1, seed=3))
        c.create_vector("w", 100, parts=2)  # a second model: counted by the master
        assert value(scrape(at_shard), "psframework_server_info", role="shard",
                     name=server["name"], address=shard.address, version="0.1.0") == 1

        before = scrape(at_shard)
        rows, ones = np.array([1, 2, 3]), np.ones(2, np.float32)
        pulls, pushes = 37, 11
        for _ in range(pulls):
            v.pull(rows)  # rows of partition 0 only: one request each
        for _ in range(pushes):
            v.push([1, 2], ones)
        after = scrape(at_shard)

        def rose(sample: str, **labels: str) -> float:
            return value(after, sample, **labels) - (value(before, sample, **labels) or 0)
        assert rose("psframework_requests_total", op="pull_rows") == pulls
        assert rose("psframework_requests_total", op="push_rows") == pushes
        assert rose("psframework_request_duration_seconds_count", op="pull_rows") == pulls
        assert rose("psframework_request_duration_seconds_bucket", op="pull_rows",
                    le="+Inf") == pulls
        assert rose("psframework_request_duration_seconds_count", op="push_rows") == pushes
        assert rose("psframework_request_duration_seconds_sum", op="push_rows") > 0
        # at least the arrays' bytes crossed, each way
        assert rose("psframework_received_bytes_total") >= pulls * rows.nbytes + pushes * (
            ones.nbytes + 2 * 8)
        assert rose("psframework_sent_bytes_total") >= pulls * 3 * 4
        # what the master placed there, and what the shard holds for it
        assert value(after, "psframework_partitions", model="v") == c.model("v").parts == 2
        assert value(after, "psframework_partition_bytes", model="v") == 10_000 * 4
        rss = value(after, "psframework_resident_memory_bytes")
        assert 0.75 < rss / vm_rss(server["pid"]) < 1.33

        # the exactly-once window: K tagged pushes whose client never moves its floor on
        # are all remembered; a resend of one is answered from the window, not applied
        uid = c.model("v").uid
        once_before = scrape(at_shard)
        k = 7

        def tagged_push(seq: int) -> None:
            c.run(c.aio.request(shard.address, "push_rows", "v",
                                {"table": "values", "part": 0, "uid": uid,
                                 "once": [b"prometheus-test", seq, 0]},
                                (np.array([5], np.int64), np.ones(1, np.float32))))
        expected = v.pull([5]) + k
        for seq in range(1, k + 1):
            tagged_push(seq)
        tagged_push(3)
        np.testing.assert_array_equal(v.pull([5]), expected)
        once_after = scrape(at_shard)
        assert (value(once_after, "psframework_once_window_entries")
                - value(once_before, "psframework_once_window_entries")) == k
        assert (value(once_after, "psframework_once_window_bytes")
                > value(once_before, "psframework_once_window_bytes"))
        assert (value(once_after, "psframework_once_duplicates_total")
                - value(once_before, "psframework_once_duplicates_total")) == 1

        # training gauges: kept by the master, latest value per name, shown by status
        c.run(c.aio.report("v", loss=0.25, pairs_per_s=1000))
        c.run(c.aio.report("v", loss=0.125))
        m = scrape(at_master)
        assert value(m, "psframework_training", model="v", name="loss") == 0.125
        assert value(m, "psframework_training", model="v", name="pairs_per_s") == 1000
        assert value(m, "psframework_shards", state="alive") == 1
        assert value(m, "psframework_models") == 2
        assert value(m, "psframework_model_partitions", model="w") == 2
        assert value(m, "psframework_model_partitions_lost", model="w") == 0
        assert value(m, "psframework_requests_total", op="create_model") == 2
        assert value(m, "psframework_request_duration_seconds_count", op="report") == 2

        # `psframework status` shows the same numbers (the shard's come with heartbeats)
        def shown() -> dict | None:
            out = subprocess.run([CLI, "status", "--json", "--master", master.address],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            st = json.loads(out.stdout)
            (s,) = st["servers"]
            served = value(scrape(at_shard), "psframework_request_duration_seconds_count",
                           op="pull_rows")
            # the shard's numbers reach the master with its next heartbeat
            return st if s["requests"].get("pull_rows", {}).get("count") == served else None
        st = wait_until(shown)
        (s,) = st["servers"]
        assert s["once"]["entries"] >= k and s["rss"] > 0 and s["metrics"] == at_shard
        assert st["master"]["metrics"] == at_master
        (model_v,) = [m for m in st["models"] if m["name"] == "v"]
        assert model_v["training"]["values"] == {"loss": 0.125, "pairs_per_s": 1000.0}
        text = subprocess.run([CLI, "status", "--master", master.address],
                              capture_output=True, text=True, timeout=60).stdout
        assert "training: loss=0.125  pairs_per_s=1000" in text
        assert f"metrics http://{at_shard}/metrics" in text
        assert any(line.split()[:2] == ["pull_rows", str(s["requests"]["pull_rows"]["count"])]
                   for line in text.splitlines())

        # destroyed: its gauges and its partitions leave both endpoints
        c.destroy("v")
        assert value(scrape(at_master), "psframework_training", model="v", name="loss") is None
        assert value(scrape(at_shard), "psframework_partitions", model="v") is None

    # a shard killed: the master counts it dead and w's partitions lost (no copy, no
    # checkpoint)
    shard.popen.kill()
    shard.popen.wait(30)
    m = wait_until(lambda: (m := scrape(at_master))
                   and value(m, "psframework_shards", state="dead") == 1 and m)
    assert value(m, "psframework_shards", state="alive") == 0
    assert value(m, "psframework_model_partitions_lost", model="w") == 2


def test_servers_in_one_process_each_have_their_own_endpoint():
    """LocalCluster(processes=False): three servers, three registries, three ports; each
    shard counts only the requests to the partition it holds."""
    with LocalCluster(shards=2, processes=False, metrics_port=0) as cluster:
        c = cluster.client()
        v = c.create_vector("v", 100, parts=2)
        st = c.status()
        shards = {s["name"]: s["metrics"] for s in st["servers"]}
        assert len(set(shards.values()) | {st["master"]["metrics"]}) == 3
        for _ in range(3):
            v.pull([1])  # partition 0
        for _ in range(5):
            v.pull([99])  # partition 1
        placement = c.model("v").placement
        for name, address in shards.items():
            samples = scrape(address)
            assert value(samples, "psframework_server_info", role="shard", name=name,
                         address=[s["address"] for s in st["servers"] if s["name"] == name][0],
                         version="0.1.0") == 1
            assert value(samples, "psframework_requests_total", op="pull_rows") == (
                3 * (placement[0] == name) + 5 * (placement[1] == name))
        addresses = [st["master"]["metrics"], *shards.values()]
    # stopped: nothing listens there any more
    for address in addresses:
        wait_until(lambda: not listening(address))


def _free_ports(n: int) -> int:
    """A port P such that P .. P+n-1 are free now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + n > 65535:
            continue
        try:
            socks = []
            for p in range(first, first + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no run of free ports")


def test_serve_local_gives_the_master_and_each_shard_a_port(cli):
    port = _free_ports(3)
    local = cli("serve", "local", "--shards", "2", "--port", "0", "--metrics-port", str(port))
    address = local.line.split("master at ")[1].split()[0]
    roles = {}
    for p in (port, port + 1, port + 2):
        (info,) = [labels for (name, labels) in scrape(f"127.0.0.1:{p}")
                   if name == "psframework_server_info"]
        roles[p] = dict(info)
    assert roles[port]["role"] == "master" and roles[port]["address"] == address
    with Client(address) as c:
        names = {s["name"] for s in c.status()["servers"]}
    assert {roles[port + 1]["role"], roles[port + 2]["role"]} == {"shard"}
    assert {roles[port + 1]["name"], roles[port + 2]["name"]} == names


def test_a_taken_metrics_port_is_refused_by_name():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        out = subprocess.run([CLI, "serve", "master", "--port", "0", "--metrics-port",
                              str(port)], capture_output=True, text=True, timeout=60,
                             env={**os.environ, **PLUGIN_ENV})
    assert out.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in out.stderr
    assert "--metrics-port" in out.stderr


@pytest.mark.parametrize("bad", [{"loss": float("nan")}, {"bad name": 1.0}])
def test_bad_training_values_are_refused(client, bad):
    c = client
    c.create_vector("reported", 4, exists_ok=True)
    with pytest.raises(ConfigError, match="training values"):
        c.run(c.aio.report("reported", **bad))
    with pytest.raises(UnknownModelError, match="no model named"):
        c.run(c.aio.report("never-created", loss=1.0))


def documented() -> dict[str, set[str]]:
    """docs/metrics.md's metric names: {"every": ..., "shard": ..., "master": ...}, from
    its three tables (every server's, then the shards', then the master's)."""
    text = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    tables, rows = [], None
    for line in text.splitlines():
        if line.startswith("| Metric |"):
            rows = set()
            tables.append(rows)
        elif rows is not None and line.startswith("| `psframework_"):
            rows.add(line.split("`")[1])
        elif not line.startswith("|"):
            rows = None
    every, shard, master = tables
    return {"every": every, "shard": shard, "master": master}


def served(address: str) -> set[str]:
    """The metric names an endpoint serves: its samples' names without the suffixes
    Prometheus adds (_bucket, _count, _sum of histograms; _created of counters)."""
    names = set()
    for name, _ in scrape(address):
        for suffix in ("_bucket", "_count", "_sum", "_created"):
            if name.endswith(suffix) and not name.endswith("_total" + suffix):
                name = name.removesuffix(suffix)
                break
        names.add(name.removesuffix("_created"))
    return names


def test_each_server_serves_exactly_the_documented_metrics():
    """Every metric docs/metrics.md lists for a role is served, and nothing else (with a
    model placed and a training gauge reported, so the labelled series exist)."""
    docs = documented()
    with LocalCluster(shards=1, processes=False, metrics_port=0) as cluster:
        c = cluster.client()
        c.create_vector("v", 100, parts=1).pull([1])
        c.report("v", loss=0.5)
        st = wait_until(lambda: (s := c.status())["servers"][0]["metrics"] and s)
        assert served(st["master"]["metrics"]) == docs["every"] | docs["master"]
        # UDF CPU time is labelled by op: it has no series before a model op has run
        shard = served(st["servers"][0]["metrics"])
        assert shard == docs["every"] | docs["shard"] - {"psframework_udf_cpu_seconds_total"}

"""The `psframework` command as an operator uses it: real processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from psframework import Client
from conftest import PLUGIN_ENV, listening, running, wait_until

CLI = str(Path(sys.executable).parent / "psframework")


def psf(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120, **kw)


def test_version_is_the_installed_package_version():
    out = psf("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"psframework {version('psframework')}"


SERVER_ONLY = ("--host", "--port", "--advertise", "--metrics-port", "--metrics-host",
               "--state-dir", "--checkpoint-dir", "--replicas", "--log-level", "--shards")


def test_each_subcommand_shows_only_its_own_flags():
    serve, status, stop = (psf(cmd, "--help").stdout for cmd in ("serve", "status", "stop"))
    for flag in (*SERVER_ONLY, "--master", "--secret", "--tls-cert", "--tls-key", "--tls-ca"):
        assert flag in serve, flag
    for flag in SERVER_ONLY:
        assert flag not in status and flag not in stop, flag
    for flag in ("--master", "--secret", "--tls-ca", "--tls-cert", "--config"):
        assert flag in status and flag in stop, flag
    assert "--watch" in status and "--json" in status and "--timeout" in stop
    assert "--watch" not in stop and "--timeout" not in status


def test_status_and_stop_default_to_the_documented_master():
    """Without --master or PSF_MASTER they go to 127.0.0.1:13370 (whether or not a
    master is there: the output names the address either way)."""
    env = {k: v for k, v in os.environ.items() if k != "PSF_MASTER"}
    out = psf("status", env={**env, "PSF_RETRY_DEADLINE": "0"})
    assert "127.0.0.1:13370" in out.stdout + out.stderr


def test_stop_without_a_master_says_so():
    out = psf("stop", "--master", "127.0.0.1:1")
    assert out.returncode == 2
    assert "cannot connect to 127.0.0.1:1" in out.stderr and "Traceback" not in out.stderr


def test_stop_stops_every_shard_then_the_master(cli):
    env = {"PSF_HEARTBEAT_TIMEOUT": "5"}
    master = cli("serve", "master", "--port", "0", env=env)
    shards = [cli("serve", "shard", "--master", master.address, env=env) for _ in range(2)]
    with Client(master.address) as c:
        wait_until(lambda: len(c.status()["servers"]) == 2)
        c.create_vector("v", 100)
        names = sorted(s["name"] for s in c.status()["servers"])
    out = psf("stop", "--master", master.address)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"psframework cluster at {master.address} stopped: the "
                                  f"master and 2 shards ({', '.join(names)})")
    assert not listening(master.address)
    for proc in (master, *shards):  # exited by themselves, cleanly
        assert proc.popen.wait(30) == 0
        assert not listening(proc.address)


def test_stop_ends_a_serve_local_cluster_and_leaves_no_process(cli):
    local = cli("serve", "local", "--shards", "2", "--port", "0")
    address = local.line.split("master at ")[1].split()[0]
    with Client(address) as c:
        pids = wait_until(lambda: (p := [s["pid"] for s in c.status()["servers"]])
                          and len(p) == 2 and all(p) and p)
    out = psf("stop", "--master", address)
    assert out.returncode == 0, out.stderr
    assert local.popen.wait(60) == 0
    for pid in pids:
        wait_until(lambda: not running(pid))


def test_status_watch_prints_again_until_ctrl_c(cli):
    master = cli("serve", "master", "--port", "0")
    watch = subprocess.Popen([CLI, "status", "--watch", "0.1", "--master", master.address],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = 0
        while seen < 3:  # three statuses, each under its own time line
            line = watch.stdout.readline()
            assert line, watch.stderr.read()
            if line.startswith("--- "):
                seen += 1
            else:
                assert line.startswith(("master ", "  ", "servers:", "models:")), line
        watch.send_signal(signal.SIGINT)
        assert watch.wait(30) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
        watch.communicate()


def test_a_directory_named_psframework_in_the_working_directory_is_named(tmp_path):
    """Python imports an empty `psframework/` of the working directory as a namespace
    package before the installed (editable) one; a server refuses to start so, and says
    why and what to do."""
    (tmp_path / "psframework").mkdir()
    env = {**os.environ, **PLUGIN_ENV}
    probe = subprocess.run([sys.executable, "-c", "import psframework; "
                            "print(hasattr(psframework, 'Model'))"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    if probe.stdout.strip() == "True":
        pytest.skip("this installation is not shadowed by a directory (not editable)")
    for role in (["master", "--port", "0"], ["shard", "--master", "127.0.0.1:1"]):
        out = subprocess.run([sys.executable, "-m", "psframework", "serve", *role],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert str(tmp_path / "psframework") in out.stderr
        assert "shadows it" in out.stderr and "from another directory" in out.stderr
        assert "Traceback" not in out.stderr and out.stdout == ""

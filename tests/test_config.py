"""Settings come from flags over PSF_* variables over a TOML file over defaults."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from psframework import ConfigError, load_settings
from psframework.config import parse_address

CLI = str(Path(sys.executable).parent / "psframework")


def test_precedence_flags_env_file_defaults(tmp_path, monkeypatch):
    toml = tmp_path / "psf.toml"
    toml.write_text('port = 4000\nrequest_timeout = 7.5\nlog_level = "debug"\nmaster = "h:1"\n')
    monkeypatch.setenv("PSF_REQUEST_TIMEOUT", "9")
    monkeypatch.setenv("PSF_SECRET", "from-env")
    s = load_settings(toml, port=5000)
    assert s.port == 5000                  # flag beats file
    assert s.request_timeout == 9.0        # env beats file
    assert s.log_level == "DEBUG"          # file beats default
    assert s.master == "h:1"
    assert s.secret_bytes == b"from-env"
    assert "from-env" not in repr(s)       # secrets are not printed
    assert s.heartbeat_timeout == 1.5      # default
    monkeypatch.delenv("PSF_REQUEST_TIMEOUT")
    assert load_settings(toml).request_timeout == 7.5


def test_bad_settings_name_the_problem(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="request_timeout"):
        load_settings(request_timeout=-1)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        load_settings(bad)
    monkeypatch.setenv("PSF_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="port"):
        load_settings()


def test_addresses():
    assert parse_address("example.org:7") == ("example.org", 7)
    assert parse_address("example.org") == ("example.org", 13370)
    assert parse_address("[::1]:99") == ("::1", 99)
    for bad in ("host:0", "host:x", ""):
        with pytest.raises(ConfigError):
            parse_address(bad)
    assert load_settings(advertise="10.1.2.3").advertised(81) == "10.1.2.3:81"
    assert load_settings(advertise="proxy:9").advertised(81) == "proxy:9"
    assert load_settings(host="127.0.0.1").advertised(5) == "127.0.0.1:5"


def test_cli_reads_the_config_file(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    toml = tmp_path / "master.toml"
    toml.write_text(f'port = {port}\nlog_level = "WARNING"\n')
    proc = subprocess.Popen([CLI, "serve", "master", "--config", str(toml)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == f"psframework master listening on 127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_cli_errors_say_what_to_do():
    out = subprocess.run([CLI, "serve", "shard"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "needs --master HOST:PORT" in out.stderr
    out = subprocess.run([CLI, "status", "--master", "127.0.0.1:1"], capture_output=True,
                         text=True, timeout=60, env={"PSF_RETRY_DEADLINE": "0", "PATH": ""})
    assert out.returncode == 2 and "cannot connect to 127.0.0.1:1" in out.stderr

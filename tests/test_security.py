"""The shared secret: every connection proves it before any other message."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from psframework import AuthError, Client, ConnectionLostError, ProtocolError, load_settings
from psframework.config import parse_address
from psframework.protocol import ClientHandshake, encode


def test_secret_refused_and_accepted(fresh_cluster):
    cluster = fresh_cluster(2, secret="s3cret")
    good = Client(cluster.address, secret="s3cret")
    m = good.create_matrix("m", 10, 3, "int32")
    m.push_rows([1], [[1, 2, 3]])

    no_retry = load_settings(retry_deadline=0)
    anonymous = Client(cluster.address, no_retry)
    with pytest.raises(AuthError, match="requires a shared secret"):
        anonymous.ping()
    anonymous.close()
    bad = Client(cluster.address, no_retry, secret="guess")
    with pytest.raises(AuthError, match="wrong shared secret"):
        bad.ping()
    # shards check the secret too, not only the master
    for address in good.model("m").servers.values():
        with pytest.raises(AuthError, match="wrong shared secret"):
            bad.run(bad.aio.request(address, "ping"))
    bad.close()

    # the refused connections did not disturb the authenticated client
    np.testing.assert_array_equal(m.pull_rows([1, 0]), [[1, 2, 3], [0, 0, 0]])
    good.close()


def test_client_with_secret_refuses_server_without(cluster):
    c = Client(cluster.address, load_settings(retry_deadline=0), secret="x")
    with pytest.raises(AuthError, match="runs without a secret"):
        c.ping()
    c.close()


def test_tls_encrypts_traffic_and_authenticates_both_ends(fresh_cluster, tmp_path):
    import trustme
    ca, stranger = trustme.CA(), trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"tls_ca": tmp_path / "ca.pem", "tls_cert": tmp_path / "cert.pem",
             "tls_key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(paths["tls_ca"])
    issued.private_key_pem.write_to_path(paths["tls_key"])
    for i, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(paths["tls_cert"], append=i > 0)
    stranger.cert_pem.write_to_path(tmp_path / "stranger.pem")
    cluster = fresh_cluster(2, **{k: str(v) for k, v in paths.items()})  # mutual TLS

    good = Client(cluster.address, load_settings(**paths))
    v = good.create_vector("v", 10, "int64")
    v.push([3, 4], [30, 40])
    np.testing.assert_array_equal(v.pull([4, 3, 0]), [40, 30, 0])

    refusals = {
        "plain": (load_settings(retry_deadline=0), "TLS"),
        "unknown server CA": (load_settings(retry_deadline=0, tls_ca=tmp_path / "stranger.pem",
                                            tls_cert=paths["tls_cert"], tls_key=paths["tls_key"]),
                              "TLS"),
        "no client certificate": (load_settings(retry_deadline=0, tls_ca=paths["tls_ca"]),
                                  "PSF_TLS_CERT"),
    }
    for settings, message in refusals.values():
        c = Client(cluster.address, settings)
        with pytest.raises((AuthError, ConnectionLostError, ProtocolError), match=message):
            c.ping()
        c.close()
    with socket.create_connection(parse_address(cluster.address)) as s:  # nothing in clear
        s.settimeout(10)
        s.sendall(b"".join(encode(ClientHandshake().start())))
        assert b"PSF1" not in s.recv(65536)
    np.testing.assert_array_equal(v.pull([3]), [30])  # the refusals disturbed nobody
    good.close()

"""The shared secret: every connection proves it before any other message."""

from __future__ import annotations

import numpy as np
import pytest

from psframework import AuthError, Client, load_settings


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

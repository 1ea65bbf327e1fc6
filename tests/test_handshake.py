"""The handshake's two state machines (sans-IO): versions, nonces, mutual HMAC proofs of
the secret, and every message out of place refused."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from psframework.errors import AuthError, ProtocolError
from psframework.protocol import (
    PROTOCOL_VERSION, ClientHandshake, FrameDecoder, Kind, Limits, Message, ServerHandshake,
    encode,
)


def wire(msg: Message) -> bytes:
    return b"".join(bytes(b) for b in encode(msg))


def over_wire(msg: Message) -> Message:
    """`msg` as the peer receives it: encoded, then decoded."""
    decoder = FrameDecoder()
    decoder.receive_data(wire(msg))
    return decoder.next_event()


def mac(secret: bytes, role: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(secret, role + a + b, hashlib.sha256).digest()


def test_handshake_without_secret_is_one_round():
    limits = Limits(max_frame_bytes=123456, max_header_bytes=4096)
    c, s = ClientHandshake(), ServerHandshake(None, limits, name="shard-1")
    (hello,) = s.receive(over_wire(c.start()))
    assert s.done and hello.kind == Kind.HELLO
    assert c.receive(over_wire(hello)) is None
    assert c.done
    assert c.server_name == "shard-1" and c.server_limits == limits
    assert len(c.nonce) == 16 and c.nonce != ClientHandshake().nonce


def test_handshake_with_secret_proves_it_both_ways():
    secret = b"s3cret"
    c, s = ClientHandshake(secret), ServerHandshake(secret, Limits())
    (hello,) = s.receive(over_wire(c.start()))
    assert not s.done and hello.args["auth"] is True
    auth = c.receive(over_wire(hello))
    assert auth.kind == Kind.AUTH and not c.done
    assert auth.args["mac"] == mac(secret, b"client", s.nonce, c.nonce)
    assert secret not in wire(auth) and secret not in wire(c.start())
    (welcome,) = s.receive(over_wire(auth))
    assert s.done and welcome.kind == Kind.WELCOME
    assert welcome.args["mac"] == mac(secret, b"server", c.nonce, s.nonce)
    assert c.receive(over_wire(welcome)) is None
    assert c.done


def test_wrong_secret_is_refused_by_the_server():
    c, s = ClientHandshake(b"guess"), ServerHandshake(b"right", Limits())
    auth = c.receive(s.receive(c.start())[0])
    with pytest.raises(AuthError):
        s.receive(auth)
    assert not s.done


@pytest.mark.parametrize("client_secret, server_secret", [(None, b"x"), (b"x", None)])
def test_secret_on_one_side_only_is_an_auth_error_on_the_client(client_secret, server_secret):
    c, s = ClientHandshake(client_secret), ServerHandshake(server_secret, Limits())
    (hello,) = s.receive(c.start())
    with pytest.raises(AuthError):
        c.receive(hello)
    assert not c.done


def test_version_mismatch_is_a_protocol_error_on_either_side():
    newer = {"version": PROTOCOL_VERSION + 1}
    hello = ServerHandshake(None, Limits()).receive(ClientHandshake().start())[0]
    with pytest.raises(ProtocolError, match="version"):
        ClientHandshake().receive(Message(Kind.HELLO, args={**hello.args, **newer}))
    hello = ClientHandshake().start()
    with pytest.raises(ProtocolError, match="version"):
        ServerHandshake(None, Limits()).receive(Message(Kind.HELLO, args={**hello.args, **newer}))


@pytest.mark.parametrize("secret, error", [(b"k", AuthError), (None, ProtocolError)])
@pytest.mark.parametrize("after_hello", [False, True])
def test_request_during_the_handshake_is_refused(secret, error, after_hello):
    s = ServerHandshake(secret, Limits())
    if after_hello:
        s.receive(ClientHandshake(secret).start())
    with pytest.raises(error):  # AuthError: a secret server serves nobody unproven
        s.receive(Message(Kind.REQUEST, 1, "pull_rows", "m"))


@pytest.mark.parametrize("secret", [None, b"k"])
def test_client_refuses_messages_out_of_order(secret):
    c, s = ClientHandshake(secret), ServerHandshake(secret, Limits())
    with pytest.raises(ProtocolError):  # a WELCOME before the server's HELLO
        c.receive(Message(Kind.WELCOME, args={"mac": b"\0" * 32}))
    hello = s.receive(c.start())[0]
    c.receive(hello)
    for unexpected in (hello, Message(Kind.REPLY, 1), Message(Kind.REQUEST, 1)):
        with pytest.raises(ProtocolError):
            c.receive(unexpected)
    if secret is None:
        with pytest.raises(ProtocolError):  # nothing to verify: a WELCOME is out of place
            c.receive(Message(Kind.WELCOME, args={"mac": b"\0" * 32}))
    assert c.done == (secret is None)


FORGED = [os.urandom(32), hmac.new(b"other", b"server", hashlib.sha256).digest(), b"",
          None, "text", 2**40, [1, 2]]


@pytest.mark.parametrize("forged", FORGED, ids=lambda v: type(v).__name__)
def test_forged_macs_are_auth_errors_on_both_sides(forged):
    c, s = ClientHandshake(b"k"), ServerHandshake(b"k", Limits())
    c.receive(s.receive(c.start())[0])
    with pytest.raises(AuthError):
        s.receive(Message(Kind.AUTH, args={"mac": forged}))
    with pytest.raises(AuthError):
        c.receive(Message(Kind.WELCOME, args={"mac": forged}))
    assert not c.done and not s.done


def test_replayed_welcome_from_another_session_is_refused():
    c1, s1 = ClientHandshake(b"k"), ServerHandshake(b"k", Limits())
    (welcome,) = s1.receive(c1.receive(s1.receive(c1.start())[0]))
    c2, s2 = ClientHandshake(b"k"), ServerHandshake(b"k", Limits())
    c2.receive(s2.receive(c2.start())[0])
    with pytest.raises(AuthError):
        c2.receive(welcome)


@pytest.mark.parametrize("args", [{"nonce": b"short"}, {"nonce": None}, {"limits": [1, 2]},
                                  {"limits": {"max_frame_bytes": 10}}, {"limits": {"x": 1}}])
def test_bad_server_hello_is_a_protocol_error(args):
    hello = ServerHandshake(None, Limits()).receive(ClientHandshake().start())[0]
    with pytest.raises(ProtocolError):
        ClientHandshake().receive(Message(Kind.HELLO, args={**hello.args, **args}))


def test_server_error_during_handshake_is_reraised_typed():
    err = AuthError("wrong shared secret", shard="s1")
    with pytest.raises(AuthError, match="wrong shared secret") as info:
        ClientHandshake(b"k").receive(over_wire(Message(Kind.ERROR, args=err.to_wire())))
    assert info.value.shard == "s1"

"""Talking to servers the way a raw peer does — a plain socket and psframework's own
sans-IO frames — for tests that must send what a well-behaved client never would; and
what a server process holds (memory, sockets), read from /proc."""

from __future__ import annotations

import socket
from pathlib import Path

from psframework.config import parse_address
from psframework.protocol import ClientHandshake, FrameDecoder, Kind, Limits, Message, encode

__all__ = ["read_frames", "handshaken", "send", "ask", "rss_mb", "open_sockets"]


def read_frames(sock: socket.socket, want: int = 1, timeout: float = 30.0,
                decoder: FrameDecoder | None = None) -> list[Message]:
    """Up to `want` frames (fewer if the peer closes)."""
    sock.settimeout(timeout)
    decoder = decoder or FrameDecoder(Limits(1 << 30, 1 << 24))
    out: list[Message] = []
    while len(out) < want:
        data = sock.recv(1 << 20)
        if not data:
            break
        decoder.receive_data(data)
        while (ev := decoder.next_event()) is not None:
            out.append(ev)
    return out


def handshaken(address: str, secret: bytes | None = None) -> socket.socket:
    """A socket to `address` that has completed the handshake."""
    sock = socket.create_connection(parse_address(address))
    hs = ClientHandshake(secret)
    reply = hs.start()
    while reply is not None:
        sock.sendall(b"".join(encode(reply)))
        (msg,) = read_frames(sock)
        reply = hs.receive(msg)
    assert hs.done
    return sock


def send(sock: socket.socket, messages: list[Message]) -> None:
    sock.sendall(b"".join(b"".join(encode(m)) for m in messages))


def ask(sock: socket.socket, op: str, model: str = "", args: dict | None = None,
        arrays: tuple = (), rid: int = 1) -> Message:
    """One request and its reply (REPLY or ERROR)."""
    send(sock, [Message(Kind.REQUEST, rid, op, model, args or {}, arrays)])
    (reply,) = read_frames(sock)
    return reply


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def open_sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += fd.readlink().name.startswith("socket:")
        except OSError:  # closed meanwhile
            pass
    return count

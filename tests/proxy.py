"""Loopback TCP proxies for fault tests. They forward bytes both ways, reading the frames
with psframework's own decoder, and break the stream on purpose:

- `ReplyDropper` swallows the reply to the first request of a given op and cuts that
  connection: the server applied it, the client never hears so;
- `Corrupter` flips a byte in the prefix of every `every`-th frame going one way, so the
  receiving side loses its framing mid-stream.
"""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

from psframework.protocol import FrameDecoder, Kind, Limits, Message
from psframework.protocol.frames import PREFIX


class _Proxy:
    """Accepts on 127.0.0.1:`port`, forwards to `target`; `_frames` decides per chunk."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._conns += [downstream, upstream]
            for src, dst, requests in ((downstream, upstream, True), (upstream, downstream, False)):
                threading.Thread(target=self._pump, args=(src, dst, requests), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        stream = SimpleNamespace(decoder=FrameDecoder(Limits(1 << 30, 1 << 24)),
                                 pending=b"", frames=0)  # what one direction has seen
        try:
            while data := src.recv(1 << 20):
                data = self._forward(data, stream, requests)
                if data is None:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _forward(self, data: bytes, stream: SimpleNamespace, requests: bool) -> bytes | None:
        """What to pass on for `data` (None: cut the connection)."""
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()
        for s in self._conns:
            s.close()


class ReplyDropper(_Proxy):
    def __init__(self, target: tuple[str, int], drop_op: str) -> None:
        super().__init__(target)
        self.drop_op = drop_op
        self.dropped = 0
        self._watch: set[int] = set()

    def _forward(self, data, stream, requests):
        stream.decoder.receive_data(data)
        drop = False
        while (ev := stream.decoder.next_event()) is not None:
            with self._lock:
                if requests and isinstance(ev, Message) and ev.kind == Kind.REQUEST \
                        and ev.op == self.drop_op and not self.dropped and not self._watch:
                    self._watch.add(ev.rid)
                elif not requests and ev.rid in self._watch and not self.dropped:
                    self.dropped += 1
                    drop = True
        return None if drop else data  # the server applied it; the client never hears so


class Corrupter(_Proxy):
    """While `armed` is set, flips the magic of every `every`-th frame sent towards the
    server (or towards the client), sparing each connection's handshake; counts what it
    broke in `corrupted`. Frames are cut from the stream by their length prefixes and
    forwarded whole."""

    def __init__(self, target: tuple[str, int], every: int, towards_server: bool) -> None:
        super().__init__(target)
        self.every = every
        self.towards_server = towards_server
        self.armed = threading.Event()
        self.corrupted = 0
        self._frames = 0

    def _forward(self, data, stream, requests):
        if requests != self.towards_server:
            return data
        buf, seen = stream.pending + data, stream.frames
        out = bytearray()
        while len(buf) >= PREFIX.size:
            _, hlen, plen = PREFIX.unpack_from(buf)
            size = PREFIX.size + hlen + plen
            if len(buf) < size:
                break
            frame, buf = bytearray(buf[:size]), buf[size:]
            seen += 1
            with self._lock:
                self._frames += self.armed.is_set()
                if self.armed.is_set() and seen > 2 and self._frames % self.every == 0:
                    frame[0] ^= 0xFF
                    self.corrupted += 1
            out += frame
        stream.pending, stream.frames = buf, seen
        return bytes(out)

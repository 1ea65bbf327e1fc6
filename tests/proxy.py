"""A loopback TCP proxy for fault tests: forwards bytes both ways, reading the frames
with psframework's own decoder, and can swallow the reply to the first request of a
given op and cut that connection — the reply is lost after the server applied it."""

from __future__ import annotations

import socket
import threading

from psframework.protocol import FrameDecoder, Kind, Limits


class ReplyDropper:
    def __init__(self, target: tuple[str, int], drop_op: str) -> None:
        self.target = target
        self.drop_op = drop_op
        self.dropped = 0
        self._watch: set[int] = set()
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
            threading.Thread(target=self._pump, args=(downstream, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        decoder = FrameDecoder(Limits(1 << 30, 1 << 24))
        try:
            while data := src.recv(1 << 20):
                decoder.receive_data(data)
                drop = False
                while (ev := decoder.next_event()) is not None:
                    with self._lock:
                        if requests and ev.kind == Kind.REQUEST and ev.op == self.drop_op \
                                and not self.dropped and not self._watch:
                            self._watch.add(ev.rid)
                        elif not requests and ev.rid in self._watch and not self.dropped:
                            self.dropped += 1
                            drop = True
                if drop:  # the server applied it; the client never hears so
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

    def close(self) -> None:
        self.listener.close()
        for s in self._conns:
            s.close()

"""The exactly-once window (transport/once.py): bounded by tags and by reply bytes."""

import numpy as np

from psframework.protocol import Kind, Message
from psframework.transport.once import OnceLog


def _log_and_calls(capacity: int, max_bytes: int):
    log = OnceLog(capacity, max_bytes)
    calls: list[int] = []

    def dispatch(msg: Message):
        calls.append(msg.args["n"])
        return {}, (np.zeros(msg.args["n"], np.uint8),)
    return log, log.wrap(dispatch), calls


def request(seq: int, n: int) -> Message:
    return Message(Kind.REQUEST, seq, "op", "m", {"once": [b"client", seq], "n": n})


def test_a_resend_gets_the_remembered_reply_not_a_second_application():
    log, handle, calls = _log_and_calls(10, 1 << 20)
    first = handle(request(1, 100))
    assert handle(request(1, 100)) is first
    assert calls == [100] and log.duplicates == 1


def test_window_is_bounded_by_reply_bytes():
    log, handle, calls = _log_and_calls(1000, 250)
    for seq in range(1, 4):  # 3 × 100 bytes > 250: the oldest reply is dropped
        handle(request(seq, 100))
    assert log.nbytes == 200 and len(log) == 2
    handle(request(3, 100))  # still remembered
    handle(request(1, 100))  # forgotten: applied again
    assert calls == [100, 100, 100, 100] and log.duplicates == 1


def test_window_is_bounded_by_tags_and_keeps_the_newest_even_if_large():
    log, handle, calls = _log_and_calls(2, 50)
    handle(request(1, 10))
    handle(request(2, 500))  # larger than the byte bound alone: kept, the older goes
    assert len(log) == 1 and log.nbytes == 500
    handle(request(2, 500))
    assert calls == [10, 500]

"""The exactly-once window (transport/once.py): at most once per tag whatever it forgets,
reads never remembered, every reply counted in bytes, bounded in tags, bytes and streams."""

import asyncio

import numpy as np
import pytest

from psframework import StaleRequestError
from psframework.protocol import Kind, Message
from psframework.transport.once import ENTRY_OVERHEAD, OnceLog, footprint


def make(capacity: int = 1000, max_bytes: int = 1 << 30, **kw):
    log = OnceLog(capacity, max_bytes, reads={"status"}, **kw)
    calls: list[tuple] = []

    def dispatch(msg: Message):
        calls.append((msg.args["once"][:2], msg.args.get("n")))
        return {}, (np.zeros(msg.args.get("n", 0), np.uint8),)
    return log, log.wrap(dispatch), calls


def tagged(seq: int, floor: int = 0, n: int = 0, stream: bytes = b"client-1", op: str = "push"):
    return Message(Kind.REQUEST, seq, op, "m", {"once": [stream, seq, floor], "n": n})


def test_a_resend_gets_the_remembered_reply_not_a_second_application():
    log, handle, calls = make()
    first = handle(tagged(1))
    assert handle(tagged(1)) is first
    assert len(calls) == 1 and log.duplicates == 1


def test_reads_never_enter_the_window_whatever_tag_they_carry():
    log, handle, calls = make()
    for seq in range(1, 2001):
        handle(tagged(seq, op="status", n=1000))
    assert len(log) == 0 and log.nbytes == 0 and len(calls) == 2000


def test_every_reply_is_counted_with_its_args_and_arrays():
    log = OnceLog(100, 1 << 30)
    big_args = {"servers": [{"name": f"shard-{i}", "address": "127.0.0.1:1"} for i in range(200)]}
    handle = log.wrap(lambda msg: (big_args, (np.zeros(5000, np.uint8),)))
    handle(tagged(1))
    # the dict alone is far more than nothing, and the array counts in full
    assert log.nbytes > 5000 + 200 * 2 * len("127.0.0.1:1")
    assert log.nbytes == footprint((big_args, (np.zeros(5000, np.uint8),))) + ENTRY_OVERHEAD


def test_the_floor_releases_replies_and_refuses_stale_copies():
    log, handle, calls = make()
    for seq in range(1, 6):
        handle(tagged(seq, floor=1))
    assert len(log) == 5
    handle(tagged(6, floor=6))  # the client is done with 1..5
    assert len(log) == 1
    with pytest.raises(StaleRequestError, match="not applied"):
        handle(tagged(3, floor=1))  # a late copy of 3: refused, not applied again
    assert [c[0][1] for c in calls] == [1, 2, 3, 4, 5, 6] and log.stale == 1


def test_a_full_window_forgets_the_oldest_but_never_applies_it_twice():
    log, handle, calls = make(capacity=3)
    for seq in range(1, 6):  # a client that never advances its floor
        handle(tagged(seq, floor=1))
    assert len(log) == 3  # 1 and 2 were dropped ...
    for seq in (1, 2):
        with pytest.raises(StaleRequestError):
            handle(tagged(seq, floor=1))  # ... so their retries are refused, not re-applied
    for seq in (3, 4, 5):
        handle(tagged(seq, floor=1))  # still remembered
    assert [c[0][1] for c in calls] == [1, 2, 3, 4, 5] and log.duplicates == 3


def test_the_byte_bound_evicts_by_bytes_and_keeps_the_newest_even_if_large():
    log, handle, calls = make(max_bytes=3 * (ENTRY_OVERHEAD + 1000))
    for seq in range(1, 5):
        handle(tagged(seq, n=200))
    assert log.nbytes <= 3 * (ENTRY_OVERHEAD + 1000)
    handle(tagged(5, n=10_000))  # larger than the bound alone: kept, the others go
    assert len(log) == 1
    handle(tagged(5, n=10_000))
    assert len(calls) == 5


def test_a_push_resent_after_100000_others_is_still_applied_once():
    log, handle, calls = make(capacity=100_000)
    handle(tagged(1, floor=1, stream=b"slow"))  # its reply is lost; the client retries late
    for seq in range(1, 100_001):  # meanwhile other clients push, advancing their floors
        handle(tagged(seq, floor=seq, stream=b"busy-%d" % (seq % 7)))
    handle(tagged(1, floor=1, stream=b"slow"))
    assert calls.count(([b"slow", 1], 0)) == 1 and log.duplicates == 1
    assert len(log) < 10  # and the busy clients left next to nothing behind


def test_streams_are_bounded_and_the_least_recent_goes_first():
    log, handle, calls = make(max_streams=10)
    for i in range(25):
        handle(tagged(1, floor=1, stream=b"s%d" % i))
    assert len(log._streams) == 10 and len(log) == 10
    handle(tagged(1, floor=1, stream=b"s24"))  # recent: still remembered
    assert log.duplicates == 1


def test_a_resend_while_the_first_still_runs_waits_for_that_one():
    async def go():
        log = OnceLog(100, 1 << 20)
        release = asyncio.Event()
        runs = []

        async def slow(msg):
            runs.append(msg.rid)
            await release.wait()
            return {"done": True}, ()
        handle = log.wrap(slow)
        first = handle(tagged(1))
        second = handle(tagged(1))  # arrives while the first is running
        release.set()
        return await first, await second, runs, log
    first, second, runs, log = asyncio.run(go())
    assert first == second == ({"done": True}, ()) and runs == [1] and log.duplicates == 1


def test_a_failed_request_is_forgotten_and_its_retry_runs():
    log = OnceLog(100, 1 << 20)
    attempts = []

    def flaky(msg):
        attempts.append(msg.rid)
        if len(attempts) == 1:
            raise ValueError("first attempt fails")
        return {}, ()
    handle = log.wrap(flaky)
    with pytest.raises(ValueError):
        handle(tagged(1))
    handle(tagged(1))
    assert len(attempts) == 2 and len(log) == 1


@pytest.mark.parametrize("tag", [[b"x", -1, 0], [b"", 1, 0], [b"x" * 65, 1, 0], [b"x", 1.5],
                                 ["text", 1, 0], [b"x", 1, 2**70], [b"x"], b"x", {"a": 1}])
def test_malformed_tags_are_refused(tag):
    from psframework import ProtocolError
    log = OnceLog(10, 1 << 20)
    with pytest.raises(ProtocolError, match="args.once"):
        log.wrap(lambda msg: ({}, ()))(Message(Kind.REQUEST, 1, "push", "m", {"once": tag}))

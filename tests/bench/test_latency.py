"""The latency window agrees with the load generator's count, to the microsecond."""

from __future__ import annotations

import numpy as np

from bench.latency import event_time, in_window
from bench.loadgen import SendClock


def _score_value(stamp: bytes) -> bytes:
    return b'{"transaction_id":"t","event_time":"' + stamp + b'","score":0.1}'


def test_a_message_stamped_in_the_windows_first_microsecond_is_in_it() -> None:
    # A start with a sub-microsecond part, as time.time_ns() gives: the load generator
    # counts from the whole microsecond, and so must the reader.
    started_ns = 1_795_288_531_856_993_900
    window_us = started_ns // 1000 + 8_000_000
    clock = SendClock()
    stamps = [window_us - 1, window_us, window_us + 1, window_us + 999_999]
    events = np.array([event_time(_score_value(clock.stamp(us))) for us in stamps])

    assert in_window(events, window_us).tolist() == [False, True, True, True]


def test_stamps_round_trip_to_their_microsecond_over_a_day() -> None:
    rng = np.random.default_rng(5)
    clock = SendClock()
    base = 1_795_288_531_000_000
    micros = base + np.sort(rng.integers(0, 86_400_000_000, 2000))
    events = np.array([event_time(_score_value(clock.stamp(int(us)))) for us in micros])

    assert (np.rint(events * 1e6).astype(np.int64) == micros).all()
    # Every stamp is in a window that starts at it, none in one that starts just after.
    for us, event in zip(micros[:200].tolist(), events[:200], strict=True):
        assert in_window(np.array([event]), us)[0]
        assert not in_window(np.array([event]), us + 1)[0]

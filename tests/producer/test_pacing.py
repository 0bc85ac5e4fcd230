"""Event-time clock, token bucket, pending labels and CLI time parsing, on a fake clock."""

from __future__ import annotations

import pytest

from producer.clock import EventClock, TokenBucket
from producer.labels import PendingLabels
from producer.timeparse import parse_duration, parse_instant


class FakeTime:
    def __init__(self, wall: float) -> None:
        self.wall = wall
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_accelerated_clock_runs_speed_times_faster_and_never_passes_the_wall() -> None:
    t = FakeTime(wall=1_000_000.0)
    clock = EventClock(3600, not_after_wall=True, wall=lambda: t.wall, monotonic=lambda: t.mono)
    clock.anchor(t.wall - 10 * 3600)  # a backfill from ten hours ago
    assert clock.now() == pytest.approx(t.wall - 10 * 3600)
    target = t.wall - 9 * 3600
    assert clock.wall_seconds_until(target) == pytest.approx(1.0)
    t.advance(1.0)
    assert clock.now() == pytest.approx(target)
    assert clock.wall_seconds_until(target) == 0.0
    t.advance(20.0)  # 20 event hours later than the anchor: caught up, held to the wall
    assert clock.now() == t.wall
    assert clock.wall_seconds_until(t.wall + 5) == pytest.approx(5.0)


def test_real_time_and_free_running_clocks() -> None:
    t = FakeTime(wall=5_000.0)
    real = EventClock(1, not_after_wall=True, wall=lambda: t.wall, monotonic=lambda: t.mono)
    real.anchor(t.wall)
    assert real.wall_seconds_until(t.wall + 2.5) == pytest.approx(2.5)
    free = EventClock(0, not_after_wall=False, wall=lambda: t.wall, monotonic=lambda: t.mono)
    free.anchor(10.0)
    assert free.now() == float("inf")
    assert free.wall_seconds_until(1e12) == 0.0
    bounded = EventClock(0, not_after_wall=True, wall=lambda: t.wall, monotonic=lambda: t.mono)
    assert bounded.wall_seconds_until(t.wall - 100) == 0.0
    assert bounded.wall_seconds_until(t.wall + 3) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        EventClock(-1, not_after_wall=True)


def test_replay_clock_is_paced_from_its_first_event() -> None:
    t = FakeTime(wall=2_000_000_000.0)
    clock = EventClock(60, not_after_wall=False, wall=lambda: t.wall, monotonic=lambda: t.mono)
    clock.anchor(1_522_540_800.0)  # 2018-04-01, far in the past: no wall bound
    clock.anchor(1_600_000_000.0)  # the first anchor wins
    assert clock.wall_seconds_until(1_522_540_800.0 + 600) == pytest.approx(10.0)


def test_token_bucket_limits_the_rate() -> None:
    t = FakeTime(wall=0.0)
    bucket = TokenBucket(100.0, monotonic=lambda: t.mono)
    taken = 0
    for _ in range(1000):  # one simulated second in 1 ms steps
        if bucket.wait_time() == 0:
            bucket.take()
            taken += 1
        t.advance(0.001)
    assert 100 <= taken <= 100 + bucket.burst
    unlimited = TokenBucket(0.0, monotonic=lambda: t.mono)
    assert all(unlimited.wait_time() == 0 for _ in range(1000))


def test_pending_labels_come_out_in_available_at_order_when_due() -> None:
    pending = PendingLabels()
    for at, name in [(30.0, b"c"), (10.0, b"a"), (20.0, b"b"), (10.0, b"a2")]:
        pending.add(at, name, b"{}", "legit")
    assert [k for k, _, _ in pending.due(5.0)] == []
    assert [k for k, _, _ in pending.due(20.0)] == [b"a", b"a2", b"b"]
    assert len(pending) == 1
    assert [k for k, _, _ in pending.drain()] == [b"c"]


def test_durations_and_instants() -> None:
    assert parse_duration("90") == 90.0
    assert parse_duration("2d") == 172800.0
    assert parse_duration("1.5h") == 5400.0
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
    assert parse_instant("now", now=1000.0) == 1000.0
    assert parse_instant("now-1h", now=10_000.0) == 6400.0
    assert parse_instant("2018-04-01") == 1_522_540_800.0
    assert parse_instant("2018-04-01 00:00:31") == 1_522_540_831.0
    assert parse_instant("2018-04-01T02:00:00+02:00") == 1_522_540_800.0
    with pytest.raises(ValueError, match="not a time"):
        parse_instant("yesterday-ish")

"""Pacing: the event-time clock (real time, accelerated, or free-running) and the token
bucket behind --rate."""

from __future__ import annotations

import time
from collections.abc import Callable


class EventClock:
    """Maps wall time to event time.

    speed > 0: event time = origin + speed * (wall seconds since the run began); speed 1 is
    real time. speed 0: free-running, events go out as soon as they are ready.
    With `not_after_wall`, event time never runs ahead of the wall clock (a simulation
    must not emit future transactions): an accelerated backfill catches up to now and
    then carries on in real time.
    """

    def __init__(
        self,
        speed: float,
        *,
        not_after_wall: bool,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.speed = speed
        self.not_after_wall = not_after_wall
        self._wall = wall
        self._monotonic = monotonic
        self._origin: float | None = None
        self._began = 0.0

    def anchor(self, origin: float) -> None:
        """Start the clock at event time `origin` (the first call wins)."""
        if self._origin is None:
            self._origin = origin
            self._began = self._monotonic()

    def _paced(self) -> float | None:
        if self.speed == 0 or self._origin is None:
            return None
        return self._origin + self.speed * (self._monotonic() - self._began)

    def now(self) -> float:
        """The current event time; +inf while free-running and not bounded by the wall."""
        now = self._paced()
        if now is None:
            now = float("inf")
        return min(now, self._wall()) if self.not_after_wall else now

    def wall_seconds_until(self, event_ts: float) -> float:
        """How long to wait, in wall seconds, until the clock reaches `event_ts`: the
        paced clock and, when bounded, the wall clock must both have got there."""
        waits = [0.0]
        paced = self._paced()
        if paced is not None:
            waits.append((event_ts - paced) / self.speed)
        if self.not_after_wall:
            waits.append(event_ts - self._wall())
        return max(waits)


class TokenBucket:
    """At most `rate` takes per second on average, bursts of at most `burst`.
    rate 0 means unlimited."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        self.rate = rate
        # A tenth of a second of traffic: smooth, yet not a sleep per message.
        self.burst = burst if burst is not None else max(1.0, rate / 10.0)
        self._monotonic = monotonic
        self._tokens = self.burst
        self._last = monotonic()

    def wait_time(self) -> float:
        """Seconds until one token is available (0: take it now with take())."""
        if self.rate == 0:
            return 0.0
        now = self._monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    def take(self) -> None:
        if self.rate:
            self._tokens -= 1.0

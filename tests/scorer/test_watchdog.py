"""The watchdog's judgement (a clock of the test's) and its thread (the real clock)."""

from __future__ import annotations

import threading

import pytest

from scorer.watchdog import Watchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_no_progress_turns_not_ready_then_exits_once() -> None:
    clock, stalls = Clock(), list[str]()
    watchdog = Watchdog(ready_after_s=30, exit_after_s=135, on_stall=stalls.append, clock=clock)
    assert not watchdog.stalled, "not started: judged by nothing yet"
    watchdog.start()
    try:
        clock.now += 29
        watchdog.check()
        assert not watchdog.stalled and stalls == []
        clock.now += 2
        watchdog.check()
        assert watchdog.stalled and stalls == []
        clock.now += 105  # 136 s without progress
        watchdog.check()
        watchdog.check()
        assert len(stalls) == 1 and "136s" in stalls[0]
    finally:
        watchdog.close()


def test_progress_keeps_it_ready() -> None:
    clock, stalls = Clock(), list[str]()
    watchdog = Watchdog(ready_after_s=30, exit_after_s=135, on_stall=stalls.append, clock=clock)
    watchdog.start()
    try:
        for _ in range(20):  # 400 s of batches committed every 20 s
            clock.now += 20
            watchdog.progressed()
            watchdog.check()
            assert not watchdog.stalled
        clock.now += 31
        assert watchdog.stalled
        watchdog.progressed()
        assert not watchdog.stalled
        assert stalls == []
    finally:
        watchdog.close()


def test_its_thread_fires_while_the_loop_is_stuck() -> None:
    fired = threading.Event()
    watchdog = Watchdog(ready_after_s=0.2, exit_after_s=0.6, on_stall=lambda _: fired.set())
    watchdog.start()
    try:
        assert fired.wait(5), "the watchdog thread never judged the stall"
        assert watchdog.stalled
    finally:
        watchdog.close()


def test_limits_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="ready_after_s"):
        Watchdog(ready_after_s=60, exit_after_s=30)

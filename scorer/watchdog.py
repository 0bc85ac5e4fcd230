"""The scorer's watchdog: no progress while input waits turns /ready false, then exits.

librdkafka's blocking calls do not always keep their timeouts: after a broker restart,
`send_offsets_to_transaction` has waited for good, far past the 60 s it was given
(librdkafka issues #5456 and #5511), and the loop waited with it while /ready said true.
So the process does not trust any call to return. The loop reports progress, and a
thread that blocks on nothing judges it by the clock alone:

- progress is a batch committed, or a turn of the loop with nothing to do (no message
  came, nothing in flight, no commit pending);
- no progress for `ready_after_s`: the scorer reports not ready (`scorer_ready` 0,
  `/ready` 503) and says why once;
- no progress for `exit_after_s`: every thread's stack goes to the log and the process
  exits with EXIT_STALLED at once (`os._exit`: a stuck librdkafka call cannot be
  interrupted, and a clean shutdown would wait on it). Nothing is lost: the batch in
  flight was not committed, and the restarted process resumes from the last commit.

A dependency outage also stops progress; the loop's own outage limit (exit code 3) then
normally ends the process first, which is why `exit_after_s` is set above it.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

from fraudcore.logs import kv
from scorer import metrics

logger = logging.getLogger(__name__)

EXIT_STALLED = 5
TICK_S = 0.5


def exit_stalled(reason: str) -> None:
    """What the watchdog does by default when the loop has made no progress for too long."""
    logger.error("no progress, exiting so that a supervisor restarts us %s", kv(reason=reason))
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    logging.shutdown()
    os._exit(EXIT_STALLED)


class Watchdog:
    def __init__(
        self,
        ready_after_s: float,
        exit_after_s: float,
        on_stall: Callable[[str], None] = exit_stalled,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < ready_after_s <= exit_after_s:
            raise ValueError("need 0 < ready_after_s <= exit_after_s")
        self.ready_after_s = ready_after_s
        self.exit_after_s = exit_after_s
        self._on_stall = on_stall
        self._clock = clock
        self._last_progress = clock()
        self._reported = False
        self._fired = False
        self._closed = threading.Event()
        self._started = False
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def start(self) -> None:
        self._last_progress = self._clock()
        self._started = True
        self._thread.start()

    def close(self) -> None:
        self._closed.set()

    def progressed(self) -> None:
        """Called by the loop: a batch was committed, or there was nothing to do."""
        self._last_progress = self._clock()
        metrics.last_progress.set(time.time())

    @property
    def idle_for_s(self) -> float:
        return self._clock() - self._last_progress

    @property
    def stalled(self) -> bool:
        return self._started and self.idle_for_s > self.ready_after_s

    def check(self) -> None:
        """One judgement; the thread calls it every TICK_S (tests call it directly)."""
        idle = self.idle_for_s
        if idle <= self.ready_after_s:
            if self._reported:
                logger.info("progressing again %s", kv(after_s=round(idle, 1)))
                self._reported = False
            return
        if not self._reported:
            self._reported = True
            logger.warning(
                "no progress, not ready %s",
                kv(idle_s=round(idle, 1), exit_after_s=self.exit_after_s),
            )
        if idle > self.exit_after_s and not self._fired:
            self._fired = True
            self._on_stall(
                f"for {idle:.0f}s no batch committed and never nothing to do "
                f"(limit {self.exit_after_s:.0f}s)"
            )

    def _watch(self) -> None:
        while not self._closed.wait(TICK_S):
            self.check()

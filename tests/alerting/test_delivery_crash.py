"""The alerting service killed (SIGKILL) again and again while webhook deliveries are in
flight, to a slow endpoint and to one that fails some of the time.

What the README promises across such crashes: every alert reaches each endpoint it is
routed to once, counting deliveries by Idempotency-Key; the only resend is of a
notification that was in flight (sent, its outcome not yet recorded), with the same key;
what an endpoint would not take is in alerts.dlq with its headers, and then never
delivered to that endpoint too; nothing is lost.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import select

from alerting.store import DEAD_LETTERED, DELIVERED, deliveries, make_engine, windows
from tests.alerting.helpers import (
    Receiver,
    Service,
    ServiceConfig,
    headers_of,
    make_alert,
    produce,
    wait_until,
)
from tests.kafka_util import read_topic

SLOW_S = 0.6  # every answer of the slow endpoint takes this long (below the timeout)
FLAKY_FAILS = 0.4  # share of first-time requests the flaky endpoint answers 503
SEVERITIES = ("high", "critical", "medium", "low")
# Where each severity goes (the rules below): both endpoints, or one of them.
ROUTED = {"high": {"slow", "flaky"}, "critical": {"slow", "flaky"}, "medium": {"slow"},
          "low": {"flaky"}}  # fmt: skip
WAVES = 5  # alerts come in waves; each wave but the last ends in a kill
WAVE_SIZE = 16
# Each round is killed when the slow endpoint has received this many requests in it: that
# last one is in flight then (sent, not answered), and the kills land at different points
# of the batches.
KILL_AT_ARRIVAL = (2, 11, 5, 9)
SUMMARY_SETTLE_S = 2.5  # the service looks for due summaries every second


def crash_rules(slow_url: str, flaky_url: str, window_s: float = 0) -> str:
    return f"""
[delivery]
max_attempts = 3
timeout_seconds = 3.0
backoff_initial_seconds = 0.05
backoff_max_seconds = 0.2
workers = 8

[suppression]
window_seconds = {window_s}

[sinks.slow]
type = "webhook"
url = "{slow_url}"

[sinks.flaky]
type = "webhook"
url = "{flaky_url}"

[[routes]]
name = "urgent"
severity = ["high", "critical"]
sinks = ["slow", "flaky"]

[[routes]]
name = "medium"
severity = ["medium"]
sinks = ["slow"]

[[routes]]
name = "low"
severity = ["low"]
sinks = ["flaky"]
"""


def recorded(db_url: str) -> dict[tuple[str, str], str]:
    """(alert_id, sink) -> final state, read from the service's own database."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.alert_id, deliveries.c.sink, deliveries.c.state)
            )
            return {(r.alert_id, r.sink): r.state for r in rows}
    finally:
        engine.dispose()


def summary_state(db_url: str, opened_by: str) -> str | None:
    """How the summary of the window `opened_by` opened ended, None while it is owed."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            query = select(windows.c.summary_state).where(windows.c.opened_by == opened_by)
            state: str | None = conn.execute(query).scalar_one()
            return state
    finally:
        engine.dispose()


def received(hook: Receiver, count: int) -> Callable[[], bool]:
    """Whether the endpoint has received `count` requests in all."""
    return lambda: sum(hook.arrivals.values()) >= count


def in_flight(hook: Receiver) -> int:
    """Requests the endpoint has received and not yet answered."""
    with hook.lock:
        return sum(hook.arrivals.values()) - len(hook.requests)


def test_sigkill_during_deliveries_every_alert_once_per_endpoint_or_dead_lettered(
    service_config: ServiceConfig,
    start_service: Callable[..., Service],
    receiver: Callable[..., Receiver],
    unique_name: Callable[[str], str],
) -> None:
    alerts = [
        make_alert(unique_name("user"), severity=SEVERITIES[i % len(SEVERITIES)], score=0.9)
        for i in range(WAVES * WAVE_SIZE)
    ]
    by_id = {a["alert_id"]: a for a in alerts}
    routed = {
        sink: {a["alert_id"] for a in alerts if sink in ROUTED[a["severity"]]}
        for sink in ("slow", "flaky")
    }
    # The flaky endpoint: some alerts it always refuses (400: final at once; 500: retried
    # until the attempts run out), the others it fails at random on first sight. Like any
    # endpoint that honours Idempotency-Key, a key it has accepted is accepted again.
    to_flaky = [a["alert_id"] for a in alerts if a["alert_id"] in routed["flaky"]]
    refused = {key: 400 for key in to_flaky[2::8]} | {key: 500 for key in to_flaky[5::8]}
    rng = random.Random(13)
    rng_lock = threading.Lock()

    def flaky_decide(key: str | None, _n: int) -> Any:
        if key in {r.key for r in flaky.accepted()}:
            return 200
        if key in refused:
            return refused[key]
        with rng_lock:
            return 503 if rng.random() < FLAKY_FAILS else 200

    slow = receiver(lambda _key, _n: ("sleep", SLOW_S, 200))
    flaky = receiver(flaky_decide)
    hooks = {"slow": slow, "flaky": flaky}
    service_config.rules = crash_rules(slow.url, flaky.url)

    # Each round: start, feed a wave, kill -9 while deliveries are in flight. After each
    # kill, what the dead process had recorded and what each endpoint had received so far.
    kills: list[tuple[dict[tuple[str, str], str], dict[str, Counter[str | None]]]] = []
    for wave, arrivals in enumerate(KILL_AT_ARRIVAL):
        service = start_service()
        before = sum(slow.arrivals.values())
        produce(
            service_config.bootstrap,
            service_config.alerts_topic,
            alerts[wave * WAVE_SIZE : (wave + 1) * WAVE_SIZE],
        )
        assert wait_until(received(slow, before + arrivals), timeout_s=60, every_s=0.005), (
            f"round {wave}: fewer than {arrivals} deliveries\n{service.log()}"
        )
        assert in_flight(slow) > 0  # the last one is still being answered
        service.proc.send_signal(signal.SIGKILL)
        assert service.wait_killed() == -signal.SIGKILL
        kills.append(
            (
                recorded(service_config.db_url),
                {sink: Counter(hook.arrivals) for sink, hook in hooks.items()},
            )
        )

    final = start_service()  # same group, same database
    produce(service_config.bootstrap, service_config.alerts_topic, alerts[-WAVE_SIZE:])
    owed = {(alert_id, sink) for sink, ids in routed.items() for alert_id in ids}
    assert wait_until(lambda: owed <= recorded(service_config.db_url).keys(), timeout_s=120), (
        final.log()
    )
    states = recorded(service_config.db_url)
    assert set(states) == owed, "a delivery state for a sink the alert is not routed to"
    assert set(states.values()) <= {DELIVERED, DEAD_LETTERED}
    assert final.alerts(limit=1)["total"] == len(alerts)  # each stored once

    dead_lettered = {key for key, state in states.items() if state == DEAD_LETTERED}
    # Recorded as dead-lettered only once Kafka has the letter: all of them are there.
    letters = read_topic({"bootstrap.servers": service_config.bootstrap}, service_config.dlq_topic)
    in_dlq: Counter[tuple[str, str]] = Counter()
    for letter in letters:
        h = headers_of(letter)
        assert h.get("dlq.reason") == "delivery_failed", h
        in_dlq[h["dlq.alert_id"], h["dlq.sink"]] += 1
        assert h["dlq.kind"] == "alert" and h["dlq.source.topic"] == service_config.alerts_topic
        assert int(h["dlq.attempts"]) >= 1 and h["dlq.last_error"], h
        assert orjson.loads(letter.value() or b"null") == by_id[h["dlq.alert_id"]]
    assert set(in_dlq) == dead_lettered, "the DLQ and the recorded dead letters disagree"

    for sink, hook in hooks.items():
        accepted = {str(key) for key in hook.deduped()}  # by Idempotency-Key
        dlq = {alert_id for alert_id, s in dead_lettered if s == sink}
        # Each alert routed here was received or is in the DLQ for this endpoint; none is
        # both, none is lost, nothing else arrived.
        assert not accepted & dlq, f"{sink}: delivered and dead-lettered: {accepted & dlq}"
        assert accepted == routed[sink] - dlq, sink
        for alert_id in accepted:
            assert states[alert_id, sink] == DELIVERED
    # The slow endpoint takes everything (in time); the flaky one refused some for good.
    assert not {s for _, s in dead_lettered} - {"flaky"}
    assert {(alert_id, "flaky") for alert_id in refused} <= dead_lettered

    # The only resends are of deliveries whose outcome was not recorded when the process
    # died: nothing recorded (delivered or dead-lettered) before a kill arrived again.
    final_arrivals = {sink: Counter(hook.arrivals) for sink, hook in hooks.items()}
    for number, (done, arrived) in enumerate(kills):
        for (alert_id, sink), state in done.items():
            again = final_arrivals[sink][alert_id] - arrived[sink][alert_id]
            assert again == 0, f"{state} {alert_id} sent to {sink} {again}x after kill {number}"
    resent = {
        (key, sink) for sink, hook in hooks.items() for key, n in hook.raw_counts().items() if n > 1
    }
    assert resent, "no kill caught a delivery between send and record: the window went untested"


class RefuseDeadLettered:
    """Triggers in the service's database that refuse to record a `dead_lettered` state (of
    an alert for a sink, or of a window's summary): the service dies right after Kafka has
    acknowledged a dead letter and before the database says so, as a kill -9 at that
    instant would leave it."""

    # (table, the column holding the state, events)
    WATCHED = (("deliveries", "state", "INSERT OR UPDATE"),
               ("suppression_windows", "summary_state", "UPDATE"))  # fmt: skip

    def __init__(self, db_url: str) -> None:
        self.engine = make_engine(db_url)
        self.sqlite = self.engine.dialect.name == "sqlite"

    def _run(self, statements: list[str]) -> None:
        with self.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    def install(self) -> None:
        statements = []
        for table, column, events in self.WATCHED:
            name = f"refuse_{table}"
            if self.sqlite:
                statements += [
                    f"CREATE TRIGGER {name}_{event} BEFORE {event} ON {table} "
                    f"WHEN NEW.{column} = 'dead_lettered' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                    for event in events.split(" OR ")
                ]
            else:
                statements += [
                    f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.{column} = 'dead_lettered' THEN RAISE EXCEPTION "
                    "'refused by the test' USING ERRCODE = 'check_violation'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql",
                    f"CREATE TRIGGER {name} BEFORE {events} ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION {name}()",
                ]
        self._run(statements)

    def remove(self) -> None:
        statements = []
        for table, _column, events in self.WATCHED:
            name = f"refuse_{table}"
            if self.sqlite:
                statements += [f"DROP TRIGGER IF EXISTS {name}_{e}" for e in events.split(" OR ")]
            else:
                statements += [
                    f"DROP TRIGGER IF EXISTS {name} ON {table}",
                    f"DROP FUNCTION IF EXISTS {name}()",
                ]
        self._run(statements)
        self.engine.dispose()


def test_death_after_the_dead_letter_before_its_record_does_not_deliver_it_after(
    service_config: ServiceConfig,
    start_service: Callable[..., Service],
    receiver: Callable[..., Receiver],
    unique_name: Callable[[str], str],
) -> None:
    """The process dies once Kafka has an alert's dead letter and before the database
    records it as dead-lettered. After the restart the alert must not go to that endpoint
    again (it would be accepted now, and be both delivered and dead-lettered): it ends
    dead-lettered, its dead letter in the DLQ, the endpoint asked once."""
    alert = make_alert(unique_name("user"), severity="low")  # routed to "flaky" only
    hook = receiver(lambda _key, n: 400 if n == 1 else 200)  # final at first, then fine
    unused = receiver()
    service_config.rules = crash_rules(unused.url, hook.url)
    kafka = {"bootstrap.servers": service_config.bootstrap}
    refuse = RefuseDeadLettered(service_config.db_url)
    first = start_service()
    try:
        refuse.install()
        produce(service_config.bootstrap, service_config.alerts_topic, [alert])
        letters = read_topic(kafka, service_config.dlq_topic, expect=1, timeout_s=30)
        assert [headers_of(m)["dlq.alert_id"] for m in letters] == [alert["alert_id"]]
        if first.proc.poll() is None:  # it may have died of the refusal already
            first.proc.send_signal(signal.SIGKILL)
        assert first.wait_killed() != 0
    finally:
        refuse.remove()

    def state() -> str | None:
        return recorded(service_config.db_url).get((alert["alert_id"], "flaky"))

    assert state() != DEAD_LETTERED, "recorded before the process died: nothing tested"
    second = start_service()  # same group, same database: the alert is read again
    assert wait_until(lambda: state() in (DELIVERED, DEAD_LETTERED), timeout_s=30), second.log()
    time.sleep(1)  # a resend, if there were one, has arrived
    assert alert["alert_id"] not in hook.deduped(), "dead-lettered, then delivered after all"
    assert hook.arrivals[alert["alert_id"]] == 1, "sent again after its dead letter"
    assert recorded(service_config.db_url) == {(alert["alert_id"], "flaky"): DEAD_LETTERED}
    letters = read_topic(kafka, service_config.dlq_topic)
    assert {headers_of(m)["dlq.alert_id"] for m in letters} == {alert["alert_id"]}
    assert not unused.requests


def test_death_after_a_summarys_dead_letter_before_its_record_does_not_send_it_after(
    service_config: ServiceConfig,
    start_service: Callable[..., Service],
    receiver: Callable[..., Receiver],
    unique_name: Callable[[str], str],
) -> None:
    """The same for the summary of a suppression window: dead-lettered, the process dies
    before that is recorded; after the restart the summary is not sent again."""
    user = unique_name("user")
    opener, folded = (make_alert(user, severity="low") for _ in range(2))
    summary_key = f"summary-{opener['alert_id']}"
    hook = receiver(lambda key, n: 400 if key == summary_key and n == 1 else 200)
    unused = receiver()
    service_config.rules = crash_rules(unused.url, hook.url, window_s=3)
    kafka = {"bootstrap.servers": service_config.bootstrap}
    refuse = RefuseDeadLettered(service_config.db_url)
    first = start_service()
    try:
        refuse.install()
        produce(service_config.bootstrap, service_config.alerts_topic, [opener, folded])
        letters = read_topic(kafka, service_config.dlq_topic, expect=1, timeout_s=30)
        assert [headers_of(m)["dlq.kind"] for m in letters] == ["summary"], first.log()
        if first.proc.poll() is None:
            first.proc.send_signal(signal.SIGKILL)
        assert first.wait_killed() != 0
    finally:
        refuse.remove()
    assert summary_state(service_config.db_url, opener["alert_id"]) is None

    second = start_service()  # the window is in the database, its summary still owed
    assert wait_until(
        lambda: summary_state(service_config.db_url, opener["alert_id"]) is not None,
        timeout_s=30,
    ), second.log()
    assert summary_state(service_config.db_url, opener["alert_id"]) == DEAD_LETTERED
    time.sleep(SUMMARY_SETTLE_S)  # another look for due summaries has come and gone
    assert hook.arrivals[summary_key] == 1, "the summary was sent again after its dead letter"
    assert summary_key not in hook.deduped()
    assert set(hook.deduped()) == {opener["alert_id"]}
    states = recorded(service_config.db_url)
    assert states[opener["alert_id"], "flaky"] == DELIVERED
    assert states[folded["alert_id"], "flaky"] == "suppressed"
    letters = read_topic(kafka, service_config.dlq_topic)
    assert {(headers_of(m)["dlq.kind"], headers_of(m)["dlq.alert_id"]) for m in letters} == {
        ("summary", folded["alert_id"])
    }

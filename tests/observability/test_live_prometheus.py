"""Every dashboard query and every rule, evaluated by a real Prometheus that scrapes real
services while they process real traffic.

What runs (all real processes, against the test stack's Kafka, Redis and MLflow, on
unique topics and a model registered for this module):
- `python -m producer`, simulating card holders in real time (about 25 transactions/s,
  with fraud and labels due after 5 s) into this module's topics;
- `python -m scorer` (bench/deployment.py's Deployment), scoring them, plus a few
  poison messages (so the DLQ series exist);
- `python -m trainer schedule`, retraining every 5 s into a model of its own, from topics
  of its own that the producer first fills with five days of a small world (so figures
  and gate decisions exist);
- `python -m alerting`, routing to a log sink and to a webhook nobody listens on (so
  deliveries, retries, final failures and suppression all happen); one analyst verdict is
  posted through its API, which the scorer then folds as a label;
- Debian's `prometheus-redis-exporter` on the test Redis;
- the test stack's Kafka broker itself, through the JMX exporter agent it runs with
  (launcher/kafka.py; job kafka);
- Debian's `prometheus` with the committed prometheus.yml (jobs, rule files) whose targets
  are replaced by those processes, scraping and evaluating rules every second.

How each kind of expression is checked (instant queries on /api/v1/query):
- dashboard queries: Grafana's `$__rate_interval` is replaced by RATE_INTERVAL; the query
  must parse and return at least one finite sample;
- recording rules: the rule's expression and the series it records must both return data,
  and /api/v1/rules must report every rule healthy;
- alert rules: healthy, their condition is normally empty, so the full expression must
  only parse, and the series the condition is built on (ALERT_SIGNALS, each a verbatim
  part of the alert's expression) must return data. Two alerts are provoked on purpose
  (EXPECTED_FIRING) and must really fire;
- `offset 1d` (alert volume against yesterday): a fresh Prometheus has no yesterday, so
  the full expression is only parsed, and the non-offset series must have data;
- counters that only get a series on their first error (ERROR_ONLY: labelled by error
  kind, and this run has no Kafka errors) may be empty; then the metric must at least be
  exposed by a scraped target (its HELP/TYPE in /api/v1/metadata), which catches a
  misspelt name;
- KNOWN_GAPS: metrics a service does not export correctly yet. Their expressions are
  strict xfails, so the day the service is fixed the run says so (XPASS fails) and the
  entry must go.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka.admin import AdminClient

from bench.deployment import Deployment, ServiceProcess
from fraudcore.kafka import ensure_topics
from fraudcore.settings import TopicSettings
from fraudcore.topics import TopicSpec
from launcher.prometheus import SOURCE
from tests.kafka_util import produce
from tests.observability import live as lv
from tests.observability.sources import (
    alert_rules,
    dashboards,
    normalized,
    panel_queries,
    recording_rules,
    substitute,
)
from tests.scorer.harness import TEST_ENV
from tests.scorer.models import isolation_model, register
from tests.stack import TestStack

pytestmark = pytest.mark.slow

# What Grafana sends for $__rate_interval with 1 s scrapes is smaller; 30 s keeps a few
# hundred transactions in every window.
RATE_INTERVAL = "30s"
# How long the services may take to produce every series once traffic flows.
DATA_TIMEOUT_S = 75.0

# The series each alert's condition is built on; each is a verbatim part of its expr
# (checked below), so this cannot drift from the rule without failing.
ALERT_SIGNALS: dict[str, tuple[str, ...]] = {
    "ScorerDown": ('up{job="scorer"}',),
    "ScorerNotReady": ("scorer_ready",),
    "ServiceTargetDown": ('up{job!="scorer"}',),
    "RedisDown": ("redis_up",),
    "ScorerStalled": (
        "sum by (job, instance) (delta(scorer_consumer_lag[1m]))",
        "increase(scorer_transactions_scored_total[1m])",
    ),
    "ScorerConsumerLagRising": (
        "job_topic:scorer_consumer_lag:sum",
        "deriv(job_topic:scorer_consumer_lag:sum[10m])",
    ),
    "EndToEndLatencySLOBreach": (
        'job:scorer_ingest_to_commit_seconds:quantile1m{quantile="0.99"}',
    ),
    "ScorerDeadLetterRateHigh": (
        "job:scorer_dlq_ratio:rate5m",
        'sum by (job) (rate(scorer_dlq_total{reason!~"label_.*"}[5m]))',
    ),
    "ScorerKafkaErrors": ("sum by (job, kind) (rate(scorer_kafka_errors_total[5m]))",),
    "ScorerRedisErrors": ("sum by (job) (rate(scorer_redis_errors_total[5m]))",),
    "ScorerUserStateConflicts": (
        "sum by (job) (increase(scorer_user_state_conflicts_total[10m]))",
    ),
    "RedisMemoryNearLimit": ("redis_memory_used_bytes", "redis_memory_max_bytes"),
    "AlertRateSpike": ("job:scorer_alerts:rate30m",),
    "AlertRateDrop": ("job:scorer_alerts:rate30m",),
    "AlertShareOutOfBand": (
        "job:scorer_alert_share:ratio15m",
        "job:scorer_alert_budget:max",
        "sum by (job) (increase(scorer_transactions_scored_total[15m]))",
    ),
    "AlertShareOutOfBandDaily": (
        "job:scorer_alert_share:ratio1d",
        "job:scorer_alert_budget:max",
        "sum by (job) (increase(scorer_transactions_scored_total[1d]))",
        "sum by (job) (increase(scorer_transactions_scored_total[15m]))",
    ),
    "ScorerModelNotLoaded": ("scorer_model_loaded",),
    "ScorerModelStale": (
        "time() - scorer_model_loaded_timestamp_seconds",
        "scorer_model_loaded == 1",
    ),
    "ScorerModelLoadFailing": (
        "sum by (job, instance) (rate(scorer_model_load_failures_total[10m]))",
    ),
    "FeatureDrift": ("max by (job, feature) (scorer_feature_psi)",),
    "AlertDeliveryFailing": ("sum by (job, sink) (increase(alerting_alerts_failed_total[10m]))",),
    "AlertDeliveryRetrying": ("sum by (job, sink) (rate(alerting_delivery_retries_total[5m]))",),
    "ProducerDeliveryFailing": (
        "sum by (job, stream) (increase(producer_delivery_failures_total[10m]))",
    ),
    "RetrainFailing": ("max by (job, instance) (trainer_last_run_failed)",),
    "RetrainOverdue": ("trainer_next_run_timestamp_seconds", "trainer_retrain_interval_seconds"),
    "KafkaUnderReplicatedPartitions": (
        "sum by (job, instance) (kafka_server_replicamanager_underreplicatedpartitions)",
    ),
    "KafkaOfflinePartitions": (
        "sum by (job) (kafka_controller_kafkacontroller_offlinepartitionscount)",
    ),
    "KafkaNoActiveController": (
        "sum by (job) (kafka_controller_kafkacontroller_activecontrollercount)",
    ),
    "AlertingInvalidAlerts": (
        'sum by (job, reason) (increase(alerting_alerts_dead_lettered_total{reason!="delivery_failed"}[10m]))',
    ),
}
# Provoked here: the unreachable webhook sink and one unparseable message on alerts.
EXPECTED_FIRING = {"AlertDeliveryFailing": {"sink": "broken"}, "AlertingInvalidAlerts": {}}
ERROR_ONLY = ("scorer_kafka_errors_total", "producer_delivery_failures_total")
# Metrics a service does not export correctly yet (none today). Example entry:
#   "scorer_consumer_lag": "why it is missing",
KNOWN_GAPS: dict[str, str] = {}


def gap(expr: str) -> str | None:
    return next((why for metric, why in KNOWN_GAPS.items() if metric in expr), None)


def xfail_if_gap(expr: str) -> tuple[pytest.MarkDecorator, ...]:
    why = gap(expr)
    return (pytest.mark.xfail(reason=why, strict=True),) if why else ()


@dataclass
class Live:
    url: str
    procs: list[lv.Proc] = field(default_factory=list)
    scorer: ServiceProcess | None = None

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(self.url + path, params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[float]:
        """Values of an instant query; fails unless Prometheus accepts the expression."""
        response = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"Prometheus rejected {expr!r}: {body.get('error')}"
        data = body["data"]
        if data["resultType"] == "scalar":
            return [float(data["result"][1])]
        return [float(sample["value"][1]) for sample in data["result"]]

    def exposed(self, metric: str) -> bool:
        # An OpenMetrics scrape names a counter family without its _total suffix.
        names = {metric, metric.removesuffix("_total")}
        return any(self.api("/api/v1/metadata", metric=name) for name in names)

    def diagnostics(self) -> str:
        parts = [p.tail() for p in self.procs]
        if self.scorer is not None:
            parts.append("--- scorer ---\n" + self.scorer.tail())
        return "\n".join(parts)


def has_data(live: Live, expr: str) -> tuple[bool, str]:
    values = live.query(expr)
    if not values:
        errors_only = [m for m in ERROR_ONLY if m in expr]
        if errors_only and all(live.exposed(m) for m in errors_only):
            return True, "no errors yet; metric exposed"
        return False, "empty result"
    if not any(math.isfinite(v) for v in values):
        return False, f"only non-finite values {values[:5]}"
    return True, ""


def signal_exprs() -> list[str]:
    return [s for signals in ALERT_SIGNALS.values() for s in signals]


def all_data_exprs() -> list[str]:
    exprs = [substitute(q.expr, RATE_INTERVAL) for q in panel_queries()]
    exprs += [r["expr"] for r in recording_rules()] + [recorded(r) for r in recording_rules()]
    return exprs + signal_exprs()


def recorded(rule: dict[str, Any]) -> str:
    labels = ",".join(f'{k}="{v}"' for k, v in sorted((rule.get("labels") or {}).items()))
    return f"{rule['record']}{{{labels}}}" if labels else rule["record"]


# --- the running system ---------------------------------------------------------------


def _admin(kafka: dict[str, str]) -> AdminClient:
    config: dict[str, str | int | float | bool] = {**kafka}
    return AdminClient(config)


def _create_topics(kafka: dict[str, str]) -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    layout = {"transactions": 3, "scores": 3, "alerts": 3, "labels": 1,
              "dlq": 1, "labels_dlq": 1, "alerts_dlq": 1,
              "retrain_transactions": 1, "retrain_labels": 1, "retrain_dlq": 1}  # fmt: skip
    topics = {key: f"obs-{key}-{tag}" for key in layout}
    ensure_topics(_admin(kafka), [TopicSpec(topics[k], n) for k, n in layout.items()])
    return topics


def _poison(kafka: dict[str, str], topic: str) -> None:
    produce(kafka, topic, [(b"poison", b"not json"), (b"poison", b'{"schema_version": 1}')])


def _post_verdict(alerting_url: str, api_key: str) -> bool:
    """One analyst verdict on the first stored alert; False while there is none."""
    items = httpx.get(alerting_url + "/alerts", params={"limit": 1}, timeout=5).json()["items"]
    if not items:
        return False
    response = httpx.post(
        f"{alerting_url}/alerts/{items[0]['alert_id']}/feedback",
        json={"label": "fraud", "note": "observability test"},
        headers={"X-API-Key": api_key},
        timeout=15,
    )
    assert response.status_code == 200, response.text
    return True


@pytest.fixture(scope="module")
def live(
    stack: TestStack, kafka_config: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("observability")
    assert stack.kafka_metrics is not None, (
        "the test broker's metrics address is unknown: an external stack names it in "
        "FRAUD_TEST_KAFKA_METRICS (host:port of its JMX exporter agent)"
    )
    exporter = lv.require_binary("prometheus-redis-exporter")
    prometheus = lv.require_binary("prometheus")
    topics = _create_topics(kafka_config)
    model_name = f"obs-model-{uuid.uuid4().hex[:8]}"
    stack_topics = TopicSettings(
        topic_transactions=topics["transactions"], topic_scores=topics["scores"],
        topic_alerts=topics["alerts"], topic_labels=topics["labels"],
        topic_transactions_dlq=topics["dlq"], topic_alerts_dlq=topics["alerts_dlq"],
        topic_labels_dlq=topics["labels_dlq"],
    )  # fmt: skip
    world = Deployment(
        stack, model_name, naming=lambda _: stack_topics, env=TEST_ENV, log_dir=workdir
    )
    ports = {
        name: lv.free_port()
        for name in ("prometheus", "alerting", "exporter", "producer", "retrainer")
    }
    api_key = uuid.uuid4().hex
    state = Live(url=f"http://127.0.0.1:{ports['prometheus']}")
    try:
        state.scorer = world.start_scorer()
        alerting = lv.Proc.start(
            "alerting", lv.python_module("alerting"), workdir,
            lv.alerting_env(stack.kafka_bootstrap, topics, ports["alerting"], api_key, workdir),
        )  # fmt: skip
        state.procs.append(alerting)
        state.procs.append(
            lv.Proc.start(
                "redis-exporter",
                [exporter, f"-redis.addr={stack.redis_url}", "-redis-only-metrics",
                 f"-web.listen-address=127.0.0.1:{ports['exporter']}"],
                workdir,
            )
        )  # fmt: skip
        state.procs.append(
            lv.Proc.start(
                "producer",
                lv.producer_argv(seed=int(uuid.uuid4().int % 10_000)),
                workdir,
                lv.producer_env(stack.kafka_bootstrap, topics, ports["producer"]),
            )
        )
        lv.retrain_history(stack.kafka_bootstrap, topics)
        state.procs.append(
            lv.Proc.start(
                "retrainer",
                [*lv.python_module("trainer"), "schedule"],
                workdir,
                lv.retrainer_env(
                    stack.kafka_bootstrap, topics, ports["retrainer"], stack.mlflow_uri,
                    f"{model_name}-retrained",
                ),
            )
        )  # fmt: skip
        config = lv.prometheus_config(
            {
                "prometheus": f"127.0.0.1:{ports['prometheus']}",
                "kafka": stack.kafka_metrics,
                "scorer": f"127.0.0.1:{state.scorer.port}",
                "alerting": f"127.0.0.1:{ports['alerting']}",
                "producer": f"127.0.0.1:{ports['producer']}",
                "retrainer": f"127.0.0.1:{ports['retrainer']}",
                # Not in prometheus.yml yet: the job the compose/launcher exporter gets.
                "redis-exporter": f"127.0.0.1:{ports['exporter']}",
            },
            SOURCE,
        )
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        server = lv.Proc.start(
            "prometheus",
            [prometheus, f"--config.file={config_path}",
             f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
            workdir,
        )  # fmt: skip
        state.procs.append(server)

        _poison(kafka_config, topics["transactions"])
        # Registered while the processes start: the scorer polls the registry every
        # second until the champion appears.
        register(stack.mlflow_uri, model_name, isolation_model(seed=3))
        state.scorer.wait_ready(90)
        lv.wait_http(f"http://127.0.0.1:{ports['alerting']}/ready", alerting, 60)
        lv.wait_http(state.url + "/-/ready", server, 30)

        def junk_alert() -> None:
            produce(kafka_config, topics["alerts"], [(b"junk", b"this is not an alert")])

        _wait_for_data(state, f"http://127.0.0.1:{ports['alerting']}", api_key, junk_alert)
        yield state
    finally:
        for proc in reversed(state.procs):
            proc.stop()
        if state.scorer is not None:
            state.scorer.stop()
        _admin(kafka_config).delete_topics(list(topics.values()), operation_timeout=10)


def _wait_for_data(
    state: Live, alerting_url: str, api_key: str, junk_alert: Callable[[], None]
) -> None:
    """Until every expression that must have data has it (bounded). Meanwhile: one
    analyst verdict, and two messages on alerts that are not alerts. Two, because a
    counter series that appears at 1 shows no increase() until it moves again, and
    AlertingInvalidAlerts must fire."""
    exprs = [e for e in all_data_exprs() if gap(e) is None]
    invalid = 'alerting_alerts_dead_lettered_total{reason!="delivery_failed"}'
    junk_alert()
    junk_sent = 1
    verdict_posted = False
    deadline = time.monotonic() + DATA_TIMEOUT_S
    missing: list[str] = exprs
    while time.monotonic() < deadline:
        dead = [p.name for p in state.procs if not p.alive()]
        assert not dead, f"{dead} exited\n{state.diagnostics()}"
        if not verdict_posted:
            verdict_posted = _post_verdict(alerting_url, api_key)
        if junk_sent == 1 and state.query(invalid):
            junk_alert()
            junk_sent = 2
        missing = [e for e in missing if not has_data(state, e)[0]]
        if not missing and verdict_posted and junk_sent == 2:
            return
        time.sleep(1)
    raise AssertionError(
        f"after {DATA_TIMEOUT_S}s no data for:\n  "
        + "\n  ".join(missing)
        + f"\n{state.diagnostics()}"
    )


# --- the checks -------------------------------------------------------------------------


def test_every_target_is_scraped(live: Live) -> None:
    targets = live.api("/api/v1/targets")["activeTargets"]
    jobs = {t["labels"]["job"] for t in targets}
    assert jobs >= {"kafka", "scorer", "alerting", "producer", "retrainer"}
    down = {t["labels"]["job"]: t["lastError"] for t in targets if t["health"] != "up"}
    assert not down, down


def test_broker_reports_a_healthy_single_node(live: Live) -> None:
    """The test broker's own metrics as Prometheus scraped them: one active controller,
    every partition online and fully replicated, and the producer's bytes coming in."""
    broker = '{job="kafka"}'
    assert live.query(f"kafka_controller_kafkacontroller_activecontrollercount{broker}") == [1]
    assert live.query(f"kafka_controller_kafkacontroller_offlinepartitionscount{broker}") == [0]
    assert live.query(f"kafka_server_replicamanager_underreplicatedpartitions{broker}") == [0]
    (bytes_in,) = live.query(f"rate(kafka_server_brokertopicmetrics_bytesin_total{broker}[30s])")
    assert bytes_in > 0
    produce_p99 = (
        'kafka_network_requestmetrics_totaltimems{job="kafka",request="Produce",quantile="0.99"}'
    )
    assert len(live.query(produce_p99)) == 1


def test_every_rule_is_loaded_and_healthy(live: Live) -> None:
    groups = live.api("/api/v1/rules")["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    assert len(loaded) == len(recording_rules()) + len(alert_rules())
    unhealthy = {r["name"]: r.get("lastError") for r in loaded if r["health"] != "ok"}
    assert not unhealthy, unhealthy


@pytest.mark.parametrize(
    "query", [pytest.param(q, id=q.id, marks=xfail_if_gap(q.expr)) for q in panel_queries()]
)
def test_dashboard_query_returns_data(live: Live, query: Any) -> None:
    expr = substitute(query.expr, RATE_INTERVAL)
    ok, why = has_data(live, expr)
    assert ok, f"{query.id}: {why} for {expr}"


@pytest.mark.parametrize(
    "rule",
    [pytest.param(r, id=recorded(r), marks=xfail_if_gap(r["expr"])) for r in recording_rules()],
)
def test_recording_rule_returns_data(live: Live, rule: dict[str, Any]) -> None:
    for expr in (rule["expr"], recorded(rule)):
        ok, why = has_data(live, expr)
        assert ok, f"{why} for {expr}"


def test_every_alert_expression_parses(live: Live) -> None:
    for rule in alert_rules():
        live.query(rule["expr"])  # parses and evaluates; normally empty when healthy


@pytest.mark.parametrize(
    "rule",
    [pytest.param(r, id=r["alert"], marks=xfail_if_gap(r["expr"])) for r in alert_rules()],
)
def test_alert_signals_have_data(live: Live, rule: dict[str, Any]) -> None:
    signals = ALERT_SIGNALS[rule["alert"]]
    for signal in signals:
        assert normalized(signal) in normalized(rule["expr"]), (rule["alert"], signal)
        ok, why = has_data(live, signal)
        assert ok, f"{rule['alert']}: {why} for {signal}"


def test_provoked_alerts_fire(live: Live) -> None:
    deadline = time.monotonic() + 20
    firing: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        firing = [a["labels"] for a in live.api("/api/v1/alerts")["alerts"]
                  if a["state"] == "firing"]  # fmt: skip
        names = {a["alertname"] for a in firing}
        if set(EXPECTED_FIRING) <= names:
            break
        time.sleep(1)
    for name, labels in EXPECTED_FIRING.items():
        matching = [a for a in firing if a["alertname"] == name]
        assert matching, f"{name} is not firing; firing: {firing}"
        assert any(labels.items() <= a.items() for a in matching), matching
    # The dashboards' annotation query (firing alerts) now has something to draw.
    for board in dashboards().values():
        for annotation in board["annotations"]["list"]:
            if "expr" in annotation:
                assert live.query(annotation["expr"]), (board["uid"], annotation["expr"])


def test_every_alert_names_its_signals() -> None:
    assert set(ALERT_SIGNALS) == {rule["alert"] for rule in alert_rules()}


def test_every_grafana_variable_is_substituted() -> None:
    for query in panel_queries():
        assert "$" not in substitute(query.expr, RATE_INTERVAL)

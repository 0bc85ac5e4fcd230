"""Builds the Grafana dashboards of grafana/dashboards/ from one description.

    python grafana/build_dashboards.py            # rewrite the JSON files
    python grafana/build_dashboards.py --check    # exit 1 if a committed file differs
    python grafana/build_dashboards.py --markdown # panel tables for prometheus/DASHBOARDS.md

The JSON files are committed (Grafana's file provider reads them as they are); this
script keeps ids, layout and the datasource consistent across them.
tests/observability/ checks that the committed files equal its output and runs every
expression against a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"
# The uid grafana/provisioning/datasources/prometheus.yml gives the stack's Prometheus.
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
SCHEMA_VERSION = 39
GRID_WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    heatmap: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    meaning: str  # the panel's description in Grafana and its row in DASHBOARDS.md
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # timeseries | stat | heatmap | bargauge
    unit: str = "short"
    width: int = 12
    height: int = 8
    # Threshold steps (value, color) above the base green; drawn as lines on graphs.
    thresholds: tuple[tuple[float, str], ...] = ()
    mappings: tuple[tuple[str, str, str], ...] = ()  # (value, text, color) for stats
    stack: bool = False


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    tags: tuple[str, ...] = field(default=("fraud-stack",))

    @property
    def filename(self) -> str:
        return f"{self.uid}.json"


def q(expr: str, legend: str = "", **kw: bool) -> Query:
    return Query(" ".join(expr.split()), legend, **kw)


RATE = "$__rate_interval"

PIPELINE = Dashboard(
    uid="fraud-pipeline",
    title="Fraud pipeline",
    description="Transactions from producer to scorer to alert notifications: throughput, "
    "latency against the 100 ms SLO, consumer lag and dead letters.",
    panels=(
        Panel(
            "Scored per second",
            "Transactions scored and committed per second, all scorer instances.",
            (q("sum(job:scorer_transactions_scored:rate1m)", "scored/s"),),
            kind="stat",
            unit="reqps",
            width=4,
            height=4,
        ),
        Panel(
            "Alerts per second",
            "Alerts the scorer committed per second (every severity).",
            (q("sum(job:scorer_alerts:rate1m)", "alerts/s"),),
            kind="stat",
            unit="reqps",
            width=4,
            height=4,
        ),
        Panel(
            "p99 end-to-end latency",
            "99th percentile from the Kafka timestamp of a transaction to its committed "
            "score, last minute. Red over the 100 ms SLO.",
            (q('max(job:scorer_ingest_to_commit_seconds:quantile1m{quantile="0.99"})', "p99"),),
            kind="stat",
            unit="s",
            width=4,
            height=4,
            thresholds=((0.1, "red"),),
        ),
        Panel(
            "Alert share",
            "Alerts per scored transaction over 5 minutes: stays put when only traffic changes.",
            (q("max(job:scorer_alert_ratio:rate5m)", "alerts/scored"),),
            kind="stat",
            unit="percentunit",
            width=4,
            height=4,
        ),
        Panel(
            "Consumer lag",
            "Messages of the transactions topic not yet scored, summed over partitions.",
            (q("sum(job_topic:scorer_consumer_lag:sum)", "lag"),),
            kind="stat",
            unit="short",
            width=4,
            height=4,
            thresholds=((1000, "orange"),),
        ),
        Panel(
            "Dead-letter share",
            "Transactions sent to the DLQ per consumed transaction over 5 minutes "
            "(alert ScorerDeadLetterRateHigh over 1%).",
            (q("max(job:scorer_dlq_ratio:rate5m)", "dead-lettered/consumed"),),
            kind="stat",
            unit="percentunit",
            width=4,
            height=4,
            thresholds=((0.01, "red"),),
        ),
        Panel(
            "Throughput by service",
            "Messages per second at each step: transactions acknowledged by Kafka "
            "(producer), consumed and scored "
            "(scorer), alerts received and notifications delivered (alerting). Consumed "
            "minus scored is what went to the DLQ.",
            (
                q(
                    "sum by (job) (job:producer_transactions_delivered:rate1m)",
                    "producer delivered",
                ),
                q("sum by (job) (job:scorer_transactions_consumed:rate1m)", "scorer consumed"),
                q("sum by (job) (job:scorer_transactions_scored:rate1m)", "scorer scored"),
                q("sum by (job) (job:alerting_alerts_received:rate1m)", "alerting received"),
                q("sum by (job) (job_sink:alerting_alerts_delivered:rate1m)", "alerting delivered"),
            ),
            unit="reqps",
        ),
        Panel(
            "Alert rate by severity",
            "Alerts per second by severity, as the scorer commits them.",
            (q("sum by (severity) (job_severity:scorer_alerts:rate1m)", "{{severity}}"),),
            unit="reqps",
            stack=True,
        ),
        Panel(
            "Produced transactions by scenario",
            "Transactions the producer hands to Kafka per second, by simulated scenario "
            "(legit, or the fraud pattern injected).",
            (q(f"sum by (scenario) (rate(producer_transactions_total[{RATE}]))", "{{scenario}}"),),
            unit="reqps",
            stack=True,
        ),
        Panel(
            "Producer event-time lag",
            "Wall clock minus the event time of the last transaction produced: about 0 in "
            "real time, large for a backfill or a replay (event_to_commit grows with it).",
            (q("max by (instance) (producer_event_time_lag_seconds)", "{{instance}}"),),
            unit="s",
        ),
        Panel(
            "End-to-end latency (Kafka timestamp to committed score)",
            "p50/p95/p99 over the last minute of the time from a transaction's Kafka "
            "message timestamp to the commit of its score: the latency the stack owns. "
            "The red line is the 100 ms SLO (alert EndToEndLatencySLOBreach).",
            (
                q(
                    "max by (quantile) (job:scorer_ingest_to_commit_seconds:quantile1m)",
                    "p{{quantile}}",
                ),
            ),
            unit="s",
            thresholds=((0.1, "red"),),
        ),
        Panel(
            "Event time to committed score",
            "p50/p95/p99 from the transaction's own event time: adds the sender's delay "
            "before publishing, and late events.",
            (
                q(
                    "max by (quantile) (job:scorer_event_to_commit_seconds:quantile1m)",
                    "p{{quantile}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "Scorer stage latency per batch (p99)",
            "Where a micro-batch spends its time: decode, features (one Redis round trip), "
            "model, produce, commit (the Kafka transaction).",
            (q("max by (stage) (job_stage:scorer_stage_seconds:p99_1m)", "{{stage}}"),),
            unit="s",
        ),
        Panel(
            "Batch size",
            "Messages per micro-batch (median and p99): small at low rates (latency), "
            "large under load (throughput).",
            (
                q(
                    f"histogram_quantile(0.5, sum by (le) (rate(scorer_batch_size_bucket[{RATE}])))",
                    "p50",
                ),
                q(
                    f"histogram_quantile(0.99, sum by (le) (rate(scorer_batch_size_bucket[{RATE}])))",
                    "p99",
                ),
            ),
        ),
        Panel(
            "Consumer lag per partition",
            "Log end minus the group's committed offset, per topic partition, measured every "
            "5 s by a thread of the scorer that keeps measuring when its loop is stuck. A "
            "rising line is a scorer falling behind (alert ScorerConsumerLagRising).",
            (q("sum by (topic, partition) (scorer_consumer_lag)", "{{topic}}[{{partition}}]"),),
        ),
        Panel(
            "Stalled scorers",
            "Per scorer instance, seconds since its loop last committed a batch or found "
            "nothing to do: a healthy scorer stays under a second. Its watchdog turns "
            "/ready false at 30 s and exits (code 5, restarted) at SCORER_MAX_OUTAGE_S + "
            "15 s; lag growing meanwhile fires ScorerStalled.",
            (q("time() - scorer_last_progress_timestamp_seconds", "{{instance}}"),),
            unit="s",
            thresholds=((30, "red"),),
        ),
        Panel(
            "Dead letters by reason",
            "Messages per second sent to a dead-letter topic, by reason: the scorer's "
            "(transactions; label_* for labels) and alerting's (invalid alerts, "
            "delivery_failed).",
            (
                q("sum by (reason) (job_reason:scorer_dlq:rate5m)", "scorer {{reason}}"),
                q(
                    "sum by (reason) (job_reason:alerting_alerts_dead_lettered:rate5m)",
                    "alerting {{reason}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Notifications by sink",
            "Alert notifications per second by sink: delivered, failed for good (alert "
            "AlertDeliveryFailing), attempts retried, and alerts folded into a "
            "suppression window.",
            (
                q(
                    "sum by (sink) (job_sink:alerting_alerts_delivered:rate1m)",
                    "delivered {{sink}}",
                ),
                q("sum by (sink) (job_sink:alerting_alerts_failed:rate5m)", "failed {{sink}}"),
                q(
                    f"sum by (sink) (rate(alerting_delivery_retries_total[{RATE}]))",
                    "retried {{sink}}",
                ),
                q(
                    f"sum by (sink) (rate(alerting_alerts_suppressed_total[{RATE}]))",
                    "suppressed {{sink}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Notification latency by sink",
            "p50 and p95 from the scorer's processed_at to the notification's delivery, "
            "by sink (retries and backoff included).",
            (
                q(
                    f"histogram_quantile(0.5, sum by (sink, le) (rate(alerting_delivery_latency_seconds_bucket[{RATE}])))",
                    "p50 {{sink}}",
                ),
                q(
                    f"histogram_quantile(0.95, sum by (sink, le) (rate(alerting_delivery_latency_seconds_bucket[{RATE}])))",
                    "p95 {{sink}}",
                ),
            ),
            unit="s",
        ),
    ),
)

MODEL = Dashboard(
    uid="fraud-model",
    title="Fraud model",
    description="The model in use, its scores and alerts by version, feature drift and "
    "the ground truth flowing back.",
    panels=(
        Panel(
            "Model version in use",
            "Registry version each scorer instance scores with (0 = none).",
            (
                q(
                    "max by (instance, model_name) (scorer_model_version)",
                    "{{model_name}} {{instance}}",
                ),
            ),
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            "Model loaded",
            "1 when the instance has a model and scores (alert ScorerModelNotLoaded).",
            (q("min by (instance) (scorer_model_loaded)", "{{instance}}"),),
            kind="stat",
            width=6,
            height=4,
            mappings=(("0", "no model", "red"), ("1", "loaded", "green")),
        ),
        Panel(
            "Time since the model was loaded",
            "Since the instance loaded its current model (a restart resets it). Over 7 "
            "days raises ScorerModelStale.",
            (
                q(
                    "max by (instance) (time() - scorer_model_loaded_timestamp_seconds)",
                    "{{instance}}",
                ),
            ),
            kind="stat",
            unit="s",
            width=6,
            height=4,
            thresholds=((7 * 86400, "orange"),),
        ),
        Panel(
            "Model load failures (1 h)",
            "Failed model loads or registry polls in the last hour; the scorer keeps its "
            "current model meanwhile.",
            (q("sum(increase(scorer_model_load_failures_total[1h]))", "failures"),),
            kind="stat",
            width=6,
            height=4,
            thresholds=((1, "orange"),),
        ),
        Panel(
            "Score distribution",
            "How many transactions got each score (buckets of 0.05, finer above 0.95), "
            "all versions together. A model change or a drift moves the mass.",
            (q(f"sum by (le) (increase(scorer_score_bucket[{RATE}]))", "{{le}}", heatmap=True),),
            kind="heatmap",
        ),
        Panel(
            "Score quantiles by model version",
            "Median and p99 score per model version; compare versions during a swap.",
            (
                q(
                    f"histogram_quantile(0.5, sum by (model_version, le) (rate(scorer_score_bucket[{RATE}])))",
                    "v{{model_version}} p50",
                ),
                q(
                    f"histogram_quantile(0.99, sum by (model_version, le) (rate(scorer_score_bucket[{RATE}])))",
                    "v{{model_version}} p99",
                ),
            ),
        ),
        Panel(
            "Alert rate by model version",
            "Alerts per second by the model version that raised them "
            "(recording rule job_model_version:scorer_alerts:rate5m).",
            (
                q(
                    "sum by (model_version) (job_model_version:scorer_alerts:rate5m)",
                    "v{{model_version}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Alert share against budget",
            "Alerted share of scored transactions over 15 minutes and over a day, the alert "
            "budget of the model in use and the band around it (half to twice the budget; "
            "alert AlertShareOutOfBand where 15 minutes expect at least 10 alerts, else "
            "AlertShareOutOfBandDaily over the day).",
            (
                q("max(job:scorer_alert_share:ratio15m)", "alerted share, 15 min"),
                q("max(job:scorer_alert_share:ratio1d)", "alerted share, 1 day"),
                q("max(job:scorer_alert_budget:max)", "budget"),
                q("2 * max(job:scorer_alert_budget:max)", "2x budget"),
                q("0.5 * max(job:scorer_alert_budget:max)", "0.5x budget"),
            ),
            unit="percentunit",
        ),
        Panel(
            "Alert share by model version",
            "Alerts per scored transaction, by model version: the number to compare "
            "between a champion and its successor.",
            (
                q(
                    "max by (model_version) (job_model_version:scorer_alert_ratio:rate5m)",
                    "v{{model_version}}",
                ),
            ),
            unit="percentunit",
        ),
        Panel(
            "Scored by model version",
            "Transactions scored per second by each model version.",
            (
                q(
                    f"sum by (model_version) (rate(scorer_score_count[{RATE}]))",
                    "v{{model_version}}",
                ),
            ),
            unit="reqps",
            stack=True,
        ),
        Panel(
            "Feature drift (PSI) over time",
            "Population stability index of each feature against the model's training "
            "distribution. Under 0.1 stable, 0.1-0.25 moving, over 0.25 shifted "
            "(alert FeatureDrift).",
            (q("max by (feature) (scorer_feature_psi)", "{{feature}}"),),
            thresholds=((0.1, "orange"), (0.25, "red")),
        ),
        Panel(
            "Feature drift now",
            "Current PSI per feature, largest first.",
            (q("sort_desc(max by (feature) (scorer_feature_psi))", "{{feature}}", instant=True),),
            kind="bargauge",
            thresholds=((0.1, "orange"), (0.25, "red")),
        ),
        Panel(
            "Retrains by outcome",
            "Scheduled retrains (python -m trainer schedule) in the last day, by outcome: "
            "promoted by the gate, kept_champion (the candidate did not beat it), no_labels, "
            "failed (alert RetrainFailing).",
            (q("sum by (outcome) (increase(trainer_runs_total[1d]))", "{{outcome}}"),),
            kind="bargauge",
            thresholds=((1, "orange"),),
        ),
        Panel(
            "Champion and candidate versions",
            "The version the champion alias points at and the last candidate the retrain "
            "registered; a candidate above the champion was kept as challenger.",
            (
                q("max(trainer_champion_version)", "champion"),
                q("max(trainer_last_version)", "last candidate"),
            ),
        ),
        Panel(
            "Gate: candidate against champion",
            "The gate's metric (average precision on the candidate's matured holdout) for "
            "each retrain's candidate and for the champion on the same rows. The candidate "
            "is promoted only above the champion.",
            (q("max by (role) (trainer_gate_figure)", "{{role}}"),),
        ),
        Panel(
            "Last candidate's figures",
            "The last retrain's figures on its holdout: ROC AUC, average precision, card "
            "precision at 100, precision and recall at the alert budget.",
            (
                q(
                    'max by (metric) (trainer_candidate_figure{metric!="alert_rate"})',
                    "{{metric}}",
                ),
            ),
        ),
        Panel(
            "Ground truth",
            "Labels folded into the merchant features per second by label (chargebacks, "
            "analyst verdicts), verdicts analysts gave on the review page in the last hour, "
            "and simulated chargebacks the producer holds until their available_at.",
            (
                q(
                    f"sum by (label) (rate(scorer_labels_folded_total[{RATE}]))",
                    "folded {{label}}/s",
                ),
                q(
                    "sum by (label) (increase(alerting_feedback_total[1h]))",
                    "verdicts {{label}} (1h)",
                ),
                q("sum(producer_pending_labels)", "labels the producer holds back"),
            ),
        ),
    ),
)

INFRASTRUCTURE = Dashboard(
    uid="fraud-infrastructure",
    title="Fraud infrastructure",
    description="Scrape targets, the Kafka broker (replication, controller, request time, "
    "bytes), Redis (from the Redis exporter and as the scorer sees it), Kafka client errors, "
    "and CPU and memory of each service.",
    panels=(
        Panel(
            "Targets up",
            "1 when Prometheus scraped the target last time (alerts ScorerDown, "
            "ServiceTargetDown).",
            (q("min by (job) (up)", "{{job}}"),),
            kind="stat",
            width=24,
            height=4,
            mappings=(("0", "down", "red"), ("1", "up", "green")),
        ),
        Panel(
            "Kafka active controller",
            "Brokers that report themselves the active KRaft controller, summed: exactly 1 "
            "when healthy (alert KafkaNoActiveController at none, or no broker scraped).",
            (q("sum(kafka_controller_kafkacontroller_activecontrollercount)", "active"),),
            kind="stat",
            width=6,
            height=4,
            mappings=(("0", "none", "red"), ("1", "active", "green")),
        ),
        Panel(
            "Kafka offline partitions",
            "Partitions without a leader, as the active controller counts them: nothing can "
            "be written to or read from them (alert KafkaOfflinePartitions over 0).",
            (q("sum(kafka_controller_kafkacontroller_offlinepartitionscount)", "offline"),),
            kind="stat",
            width=6,
            height=4,
            thresholds=((1, "red"),),
        ),
        Panel(
            "Kafka under-replicated partitions",
            "Partitions with fewer in-sync replicas than replicas, summed over the brokers "
            "that lead them (alert KafkaUnderReplicatedPartitions over 0 for 5 minutes). "
            "Always 0 on a single node: every partition has one replica.",
            (q("sum(kafka_server_replicamanager_underreplicatedpartitions)", "under-replicated"),),
            kind="stat",
            width=6,
            height=4,
            thresholds=((1, "orange"),),
        ),
        Panel(
            "Kafka ISR shrinks (1 h)",
            "Times in the last hour a replica dropped out of a partition's in-sync set "
            "(kafka_server_replicamanager_isrshrinks_total): a follower fell behind or its "
            "broker went away.",
            (q("sum(increase(kafka_server_replicamanager_isrshrinks_total[1h]))", "shrinks"),),
            kind="stat",
            width=6,
            height=4,
            thresholds=((1, "orange"),),
        ),
        Panel(
            "Kafka request time",
            "Broker time per request from arrival to response sent, p99 and p50, as the "
            "broker's own percentiles: Produce (the producer, and the scorer's transactional "
            "writes of scores and alerts) and FetchConsumer (consumer fetches, which include "
            "the broker's wait for new data up to the consumer's fetch.wait.max.ms: high "
            "when a consumer is caught up, not a slow broker).",
            (
                q(
                    'max by (request) (kafka_network_requestmetrics_totaltimems{quantile="0.99"})',
                    "{{request}} p99",
                ),
                q(
                    'max by (request) (kafka_network_requestmetrics_totaltimems{quantile="0.50"})',
                    "{{request}} p50",
                ),
            ),
            unit="ms",
        ),
        Panel(
            "Kafka bytes in and out",
            "Bytes per second the broker receives from clients (produce) and sends to "
            "clients (fetch), every topic together.",
            (
                q(f"sum(rate(kafka_server_brokertopicmetrics_bytesin_total[{RATE}]))", "in"),
                q(f"sum(rate(kafka_server_brokertopicmetrics_bytesout_total[{RATE}]))", "out"),
            ),
            unit="Bps",
        ),
        Panel(
            "Redis commands per second",
            "Commands Redis processed per second, from every client (mostly the scorer's "
            "feature calls and label folding).",
            (
                q(
                    f"sum by (instance) (rate(redis_commands_processed_total[{RATE}]))",
                    "{{instance}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Redis server time per call",
            "Average time Redis spends executing one call, by command (server side, "
            "without the network).",
            (
                q(
                    f"sum by (cmd) (rate(redis_commands_duration_seconds_total[{RATE}])) "
                    f"/ sum by (cmd) (rate(redis_commands_total[{RATE}]))",
                    "{{cmd}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "Redis round trip seen by the scorer",
            "The scorer's features stage per batch (p50, p99): one pipelined round trip "
            "to Redis plus feature computation.",
            (
                q(
                    f'histogram_quantile(0.5, sum by (le) (rate(scorer_stage_seconds_bucket{{stage="features"}}[{RATE}])))',
                    "p50",
                ),
                q('max(job_stage:scorer_stage_seconds:p99_1m{stage="features"})', "p99"),
            ),
            unit="s",
        ),
        Panel(
            "Redis memory",
            "Memory Redis uses for data and the RSS of its process, and maxmemory "
            "(0 = no limit; at the limit writes fail: alert RedisMemoryNearLimit).",
            (
                q("sum by (instance) (redis_memory_used_bytes)", "used {{instance}}"),
                q("sum by (instance) (redis_memory_used_rss_bytes)", "rss {{instance}}"),
                q("max by (instance) (redis_memory_max_bytes)", "maxmemory {{instance}}"),
            ),
            unit="bytes",
        ),
        Panel(
            "Redis clients, keys and errors",
            "Connected clients and keys in Redis, failed Redis calls per second seen by "
            "the scorer (alert ScorerRedisErrors), and batches per second computed again "
            "because another scorer wrote their users (alert ScorerUserStateConflicts).",
            (
                q("sum by (instance) (redis_connected_clients)", "clients {{instance}}"),
                q("sum by (instance) (redis_db_keys)", "keys {{instance}}"),
                q(f"sum(rate(scorer_redis_errors_total[{RATE}]))", "scorer errors/s"),
                q(
                    f"sum(rate(scorer_user_state_conflicts_total[{RATE}]))",
                    "user-state conflicts/s",
                ),
            ),
        ),
        Panel(
            "Kafka errors",
            "Scorer Kafka errors per second by kind (consume, retriable, abortable, "
            "fatal), aborted scorer transactions, and producer delivery failures.",
            (
                q(f"sum by (kind) (rate(scorer_kafka_errors_total[{RATE}]))", "scorer {{kind}}"),
                q(
                    f"sum(rate(scorer_kafka_transactions_aborted_total[{RATE}]))",
                    "scorer aborted transactions",
                ),
                q(
                    f"sum by (stream) (rate(producer_delivery_failures_total[{RATE}]))",
                    "producer failed deliveries {{stream}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Scrape duration",
            "How long Prometheus takes to scrape each target: a slow /metrics is a busy process.",
            (q("max by (job) (scrape_duration_seconds)", "{{job}}"),),
            unit="s",
        ),
        Panel(
            "CPU by service",
            "CPU used per process (1 = one full core), from each service's "
            "process_cpu_seconds_total (the Kafka broker's from its JMX exporter agent).",
            (
                q(
                    f"sum by (job, instance) (rate(process_cpu_seconds_total[{RATE}]))",
                    "{{job}} {{instance}}",
                ),
            ),
            unit="percentunit",
        ),
        Panel(
            "Memory by service",
            "Resident memory per process (process_resident_memory_bytes; the Kafka broker's "
            "from its JMX exporter agent).",
            (q("sum by (job, instance) (process_resident_memory_bytes)", "{{job}} {{instance}}"),),
            unit="bytes",
        ),
    ),
)

DASHBOARDS = (PIPELINE, MODEL, INFRASTRUCTURE)


def _thresholds(panel: Panel) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": color, "value": value} for value, color in panel.thresholds]
    return {"mode": "absolute", "steps": steps}


def _target(query: Query, ref: str) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": DATASOURCE,
        "refId": ref,
        "expr": query.expr,
        "legendFormat": query.legend,
        "range": not query.instant,
        "instant": query.instant,
    }
    if query.heatmap:
        target["format"] = "heatmap"
    return target


def _options(panel: Panel) -> dict[str, Any]:
    if panel.kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    if panel.kind == "bargauge":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "gradient",
            "showUnfilled": True,
        }
    if panel.kind == "heatmap":
        return {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "yAxis": {"axisPlacement": "left"},
            "legend": {"show": True},
            "tooltip": {"mode": "single", "yHistogram": False},
        }
    return {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _field_config(panel: Panel) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": _thresholds(panel)}
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if panel.thresholds else "off"},
        }
        defaults["color"] = {"mode": "palette-classic"}
    elif panel.kind in ("stat", "bargauge"):
        defaults["color"] = {"mode": "thresholds"}
    if panel.mappings:
        defaults["mappings"] = [
            {"type": "value", "options": {v: {"text": t, "color": c, "index": i}}}
            for i, (v, t, c) in enumerate(panel.mappings)
        ]
    return {"defaults": defaults, "overrides": []}


def _layout(panels: tuple[Panel, ...]) -> list[dict[str, int]]:
    """Left to right, wrapping at the grid width; a row is as tall as its tallest."""
    out, x, y, row_height = [], 0, 0, 0
    for panel in panels:
        if x + panel.width > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        out.append({"h": panel.height, "w": panel.width, "x": x, "y": y})
        x += panel.width
        row_height = max(row_height, panel.height)
    return out


def build(dashboard: Dashboard) -> dict[str, Any]:
    panels = []
    for number, (panel, pos) in enumerate(
        zip(dashboard.panels, _layout(dashboard.panels), strict=True), start=1
    ):
        panels.append(
            {
                "id": number,
                "type": panel.kind,
                "title": panel.title,
                "description": panel.meaning,
                "datasource": DATASOURCE,
                "gridPos": pos,
                "targets": [
                    _target(query, chr(ord("A") + i)) for i, query in enumerate(panel.queries)
                ],
                "fieldConfig": _field_config(panel),
                "options": _options(panel),
            }
        )
    others = [d for d in DASHBOARDS if d.uid != dashboard.uid]
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                {
                    "datasource": DATASOURCE,
                    "enable": True,
                    "expr": 'ALERTS{alertstate="firing"}',
                    "iconColor": "red",
                    "name": "Firing alerts",
                    "step": "60s",
                    "titleFormat": "{{alertname}}",
                    "textFormat": "{{severity}} {{job}} {{instance}}",
                    "useValueForTime": False,
                },
            ]
        },
        "links": [
            {"type": "link", "title": d.title, "url": f"/d/{d.uid}", "icon": "dashboard"}
            for d in others
        ],
        "panels": panels,
    }


def render(dashboard: Dashboard) -> str:
    return json.dumps(build(dashboard), indent=2, ensure_ascii=False) + "\n"


def markdown() -> str:
    parts = []
    for dashboard in DASHBOARDS:
        parts.append(f"### {dashboard.title} (`/d/{dashboard.uid}`)\n\n{dashboard.description}\n")
        parts.append("| panel | what it shows |\n| --- | --- |")
        parts += [f"| {p.title} | {p.meaning} |" for p in dashboard.panels]
        parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file differs")
    parser.add_argument("--markdown", action="store_true", help="print the panel tables")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    stale = []
    for dashboard in DASHBOARDS:
        path = OUT_DIR / dashboard.filename
        text = render(dashboard)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        sys.stderr.write(f"out of date (run python {Path(__file__).name}): {', '.join(stale)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

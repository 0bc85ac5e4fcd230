"""The naive baseline (`python -m bench.naive_scorer`): the common first design of a
streaming scorer, measured on the same input as ours.

One message at a time: `consumer.poll()`, decode and validate (the same contract code),
features with one Redis command per window and per state item (ZADD/ZCOUNT/
ZRANGEBYSCORE/HINCRBY/HMGET/GET/SET/EXPIRE, no Lua, no pipeline), the same FraudModel
scored with stock scikit-learn on a one-row array, the score produced and flushed
(synchronous, acks=all), then the offset committed synchronously. At-least-once, like
most such designs. The features are the same 33 in kind; they are computed from the usual
Redis structures, so a few edge cases (replays, out-of-order events) differ from ours.

Prints one JSON line: messages, the time between first and last commit, and the time
spent per stage.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import uuid
from collections import defaultdict
from typing import Any

import numpy as np
import orjson
import redis
from confluent_kafka import Consumer, Producer

import mlflow
from fraudcore.contracts import ContractError, decode_transaction, format_time
from fraudcore.features import (
    DAY_MS,
    FEATURE_NAMES,
    HOUR_MS,
    KNOWN_FOR_MS,
    MIN_SPEED_INTERVAL_MS,
    MINUTE_MS,
    NAN,
    TxnInput,
    derive_columns,
    event_columns,
    haversine_km,
)
from fraudcore.kafka import consumer_config, producer_config
from fraudcore.model import FraudModel


class NaiveFeatures:
    """The 33 features, one Redis round trip per command."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.r = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def compute_and_update(self, tx: TxnInput) -> np.ndarray:
        r, t = self.r, tx.ts_ms
        u = f"{self.prefix}:u:{tx.user_id}"
        m = f"{self.prefix}:m:{tx.merchant_id}"
        today = t // DAY_MS
        # velocity: one ZCOUNT per window (events strictly before t)
        c1m = r.zcount(f"{u}:tx", t - MINUTE_MS, f"({t}")
        c10m = r.zcount(f"{u}:tx", t - 10 * MINUTE_MS, f"({t}")
        c1h = r.zcount(f"{u}:tx", t - HOUR_MS, f"({t}")
        # 24 h: the events themselves, for sums and distinct merchants/countries
        day_events = r.zrangebyscore(f"{u}:tx", t - DAY_MS, f"({t}")
        c24h = len(day_events)
        sum24h = 0
        merchants: set[str] = set()
        countries: set[str] = set()
        for member in day_events:
            _, cents, merchant, country = member.decode().split("|")
            sum24h += int(cents)
            merchants.add(merchant)
            if country:
                countries.add(country)
        # 7 and 30 days: one hash of daily buckets
        fields = [f"{d}:{k}" for d in range(today - 29, today + 1) for k in "nsq"]
        buckets = [int(v or 0) for v in r.hmget(f"{u}:days", fields)]
        n = buckets[0::3]
        s = buckets[1::3]
        q = buckets[2::3]
        count30, sum30, sq30 = sum(n), sum(s), sum(q)
        count7, sum7 = sum(n[-7:]), sum(s[-7:])
        mean30 = sum30 / count30 / 100 if count30 else NAN
        zscore = NAN
        if count30 >= 2:
            mean_c = sum30 / count30
            variance = sq30 / count30 - mean_c * mean_c
            if variance > 0:
                zscore = (tx.cents - mean_c) / math.sqrt(variance)
        # previous transaction: time and place
        since_prev = distance = speed = NAN
        last = r.get(f"{u}:last")
        if last is not None:
            prev_ts, prev_lat, prev_lon = last.decode().split(",")
            since_prev = (t - int(prev_ts)) / 1000
            if tx.lat is not None and tx.lon is not None and prev_lat:
                distance = haversine_km(float(prev_lat), float(prev_lon), tx.lat, tx.lon)
                interval = max(t - int(prev_ts), MIN_SPEED_INTERVAL_MS)
                speed = distance / (interval / HOUR_MS)
        new_device = NAN
        if tx.device and count30:
            seen = r.hget(f"{u}:devices", tx.device)
            new_device = 0.0 if seen is not None and int(seen) > t - KNOWN_FOR_MS else 1.0
        new_country = NAN
        if tx.country and count30:
            seen = r.hget(f"{u}:countries", tx.country)
            new_country = 0.0 if seen is not None and int(seen) > t - KNOWN_FOR_MS else 1.0
        # merchant: daily counts, and fraud reports by window
        merchant_days = [
            int(v or 0) for v in r.hmget(f"{m}:days", [str(d) for d in range(today - 30, today)])
        ]
        mc1, mc7, mc30 = merchant_days[-1], sum(merchant_days[-7:]), sum(merchant_days)
        f1 = r.zcount(f"{m}:frauds", t - DAY_MS, t)
        f7 = r.zcount(f"{m}:frauds", t - 7 * DAY_MS, t)
        f30 = r.zcount(f"{m}:frauds", t - 30 * DAY_MS, t)

        # fold the transaction in, and keep every key alive
        r.zadd(f"{u}:tx", {f"{tx.transaction_id}|{tx.cents}|{tx.merchant_id}|{tx.country}": t})
        r.zremrangebyscore(f"{u}:tx", 0, t - DAY_MS - 1)
        r.hincrby(f"{u}:days", f"{today}:n", 1)
        r.hincrby(f"{u}:days", f"{today}:s", tx.cents)
        r.hincrby(f"{u}:days", f"{today}:q", tx.cents * tx.cents)
        location = f"{tx.lat},{tx.lon}" if tx.lat is not None else ","
        r.set(f"{u}:last", f"{t},{location}", ex=self.ttl_s)
        if tx.device:
            r.hset(f"{u}:devices", tx.device, t)
        if tx.country:
            r.hset(f"{u}:countries", tx.country, t)
        r.hincrby(f"{m}:days", str(today), 1)
        for key in (f"{u}:tx", f"{u}:days", f"{u}:devices", f"{u}:countries", f"{m}:days"):
            r.expire(key, self.ttl_s)

        values: dict[str, float] = {
            "user_txn_count_1m": c1m, "user_txn_count_10m": c10m, "user_txn_count_1h": c1h,
            "user_txn_count_24h": c24h, "user_txn_count_7d": count7,
            "user_txn_count_30d": count30, "user_amount_sum_1d": sum24h / 100,
            "user_amount_mean_1d": sum24h / c24h / 100 if c24h else NAN,
            "user_amount_sum_7d": sum7 / 100,
            "user_amount_mean_7d": sum7 / count7 / 100 if count7 else NAN,
            "user_amount_sum_30d": sum30 / 100, "user_amount_mean_30d": mean30,
            "user_amount_zscore_30d": zscore, "user_seconds_since_prev": since_prev,
            "user_distinct_merchants_24h": len(merchants),
            "user_distinct_countries_24h": len(countries),
            "user_distance_km_prev": distance, "user_speed_kmh_prev": speed,
            "user_new_device": new_device, "user_new_country": new_country,
            "merchant_txn_count_1d": mc1, "merchant_txn_count_7d": mc7,
            "merchant_txn_count_30d": mc30, "merchant_fraud_count_1d": f1,
            "merchant_fraud_count_7d": f7, "merchant_fraud_count_30d": f30,
            "merchant_fraud_ratio_7d": f7 / (mc7 + 1), "merchant_fraud_ratio_30d": f30 / (mc30 + 1),
        }  # fmt: skip
        for name, column in event_columns(np.array([t]), np.array([tx.cents])).items():
            values[name] = float(column[0])
        # Placed by the catalogue; a feature this design does not compute stays missing.
        vector = np.array([[values.get(name, NAN) for name in FEATURE_NAMES]], np.float64)
        derive_columns(vector)
        return vector[0]


def load_model(tracking_uri: str, name: str) -> FraudModel:
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.sklearn.load_model(f"models:/{name}@champion")
    if not isinstance(model, FraudModel):
        raise TypeError(f"expected a FraudModel, got {type(model).__name__}")
    return model


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = load_model(args.mlflow, args.model)
    client = redis.Redis.from_url(args.redis)
    features = NaiveFeatures(client, args.prefix, args.ttl)
    base = {"bootstrap.servers": args.bootstrap}
    consumer = Consumer(consumer_config(base, args.group))
    producer = Producer(producer_config(base, **{"linger.ms": 0}))
    consumer.subscribe([args.topic])
    stages: dict[str, float] = defaultdict(float)
    done = 0
    first_commit = last_commit = 0.0
    started = time.monotonic()
    try:
        while done < args.max_messages and time.monotonic() - started < args.max_seconds:
            msg = consumer.poll(1.0)
            if msg is None:
                if done:
                    break  # the topic is drained
                continue
            if msg.error():
                continue
            t0 = time.perf_counter()
            try:
                record, event_ts = decode_transaction(msg.value())
            except ContractError:
                consumer.commit(message=msg, asynchronous=False)
                continue
            tx = TxnInput.from_record(record, event_ts)
            t1 = time.perf_counter()
            row = features.compute_and_update(tx)
            t2 = time.perf_counter()
            score = float(model.score(np.array([row]))[0])
            t3 = time.perf_counter()
            value = {
                "schema_version": 1,
                "transaction_id": tx.transaction_id,
                "user_id": tx.user_id,
                "merchant_id": tx.merchant_id,
                "event_time": record["timestamp"],
                "score": score,
                "model_name": args.model,
                "model_version": "champion",
                "processed_at": format_time(time.time()),
            }
            producer.produce(args.scores, orjson.dumps(value), tx.user_id.encode())
            if score >= model.threshold:
                alert = {**value, "alert_id": str(uuid.uuid4()), "threshold": model.threshold}
                producer.produce(args.alerts, orjson.dumps(alert), tx.user_id.encode())
            producer.flush(30)
            t4 = time.perf_counter()
            consumer.commit(message=msg, asynchronous=False)
            t5 = time.perf_counter()
            for stage, seconds in (
                ("decode", t1 - t0),
                ("features", t2 - t1),
                ("model", t3 - t2),
                ("produce", t4 - t3),
                ("commit", t5 - t4),
            ):
                stages[stage] += seconds
            done += 1
            last_commit = time.time()
            if done == 1:
                first_commit = last_commit
    finally:
        consumer.close()
        client.close()
    per_tx = {k: round(v / max(done, 1) * 1e6, 1) for k, v in stages.items()}
    return {
        "messages": done,
        "first_commit": first_commit,
        "last_commit": last_commit,
        "stages_us_per_tx": per_tx,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_scorer", description=__doc__)
    for name in ("bootstrap", "redis", "mlflow", "model", "topic", "scores", "alerts", "group"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--prefix", required=True, help="Redis key prefix of this run")
    parser.add_argument("--ttl", type=int, default=7200, help="key expiry, seconds")
    parser.add_argument("--max-messages", type=int, default=3000)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    sys.stdout.write(orjson.dumps(run(args)).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

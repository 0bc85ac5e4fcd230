"""What the scorer does to one micro-batch, apart from Kafka: decode, features, score,
and the messages to write. Pure functions of their inputs, so they are easy to test."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson
from confluent_kafka import Message

from fraudcore.contracts import ContractError, known_fields, transaction_decoder
from fraudcore.dead_letter import dead_letter as fraudcore_dead_letter
from fraudcore.features import FEATURE_NAMES, TxnInput
from scorer import explain

# alert_id = uuid5(ALERT_NAMESPACE, transaction_id): the same transaction always gets the
# same alert id, across replays, restarts and instances.
ALERT_NAMESPACE = uuid.UUID("6f1c2a9e-3b57-4d0e-9a8e-5a1b7c0d2e41")
_KNOWN_TRANSACTION_FIELDS = known_fields("transactions")


# Named tuples, not frozen dataclasses: one of each is built per message, and a frozen
# dataclass costs about a microsecond more to build (the benchmark's profile).
class Accepted(NamedTuple):
    msg: Message
    record: dict[str, Any]
    event_ts: float
    tx: TxnInput


class Rejected(NamedTuple):
    msg: Message
    error: ContractError


class OutMessage(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]] | None = None


def decode_batch(
    msgs: Sequence[Message], max_bytes: int, max_future_s: float, now: float
) -> tuple[list[Accepted], list[Rejected], int]:
    """Split a batch into valid transactions and rejects; also counts transactions that
    carry fields the contract does not know (accepted: newer producers must not break us)."""
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    with_unknown = 0
    decode = transaction_decoder(max_bytes=max_bytes, max_future_s=max_future_s, now=now)
    from_record = TxnInput.from_record
    known = _KNOWN_TRANSACTION_FIELDS.issuperset
    # What Accepted(...) does, minus the named tuple's Python-level __new__ frame.
    new_tuple = tuple.__new__
    for msg in msgs:
        try:
            record, event_ts = decode(msg.value())
            tx = from_record(record, event_ts)
        except ContractError as error:
            rejected.append(Rejected(msg, error))
            continue
        if not known(record):
            with_unknown += 1
        accepted.append(new_tuple(Accepted, (msg, record, event_ts, tx)))
    return accepted, rejected, with_unknown


def dead_letter(rejected: Rejected, dlq_topic: str, limit: int) -> OutMessage:
    """The original bytes and headers, plus headers naming the reason and the source
    (fraudcore/dead_letter.py); truncated, and marked so, past `limit` bytes."""
    error = rejected.error
    letter = fraudcore_dead_letter(
        rejected.msg, dlq_topic, error.reason, error.detail, error.field, limit=limit
    )
    return OutMessage(*letter)


# The features object as a bytes template: each row's numbers, as orjson writes them,
# go into the %b slots (one orjson call for the whole matrix and one format per row
# instead of a float, a dict entry and a serialised entry per value).
_FEATURE_TEMPLATE = b"{" + b",".join(orjson.dumps(name) + b":%b" for name in FEATURE_NAMES) + b"}"


def feature_map_bytes(features: np.ndarray) -> list[bytes]:
    """The {"name": value} object of every row as JSON bytes (NaN is written as null:
    "missing" stays visible in the output), byte for byte what orjson writes for the dict."""
    if features.shape[0] == 0:
        return []
    matrix = np.ascontiguousarray(features, dtype=np.float64)
    text = orjson.dumps(matrix, option=orjson.OPT_SERIALIZE_NUMPY)
    # Numbers and nulls contain neither "],[" nor ",", so splitting is exact.
    template = _FEATURE_TEMPLATE
    return [template % tuple(row.split(b",")) for row in text[2:-2].split(b"],[")]


def _feature_maps(features: np.ndarray) -> list[orjson.Fragment]:
    return [orjson.Fragment(m) for m in feature_map_bytes(features)]


def outputs(
    accepted: Sequence[Accepted],
    features: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float,
    explainer: explain.Explainer,
    model_name: str,
    model_version: str,
    scores_topic: str,
    alerts_topic: str,
    emit_scores: bool,
    processed_at: str,
) -> tuple[list[OutMessage], list[str]]:
    """Score and alert messages for a batch; returns them and the severities alerted."""
    out: list[OutMessage] = []
    severities: list[str] = []
    score_list = scores.tolist()
    if len(features) != len(accepted) or len(score_list) != len(accepted):
        raise ValueError("accepted, features and scores must have one row per transaction")
    alerting = [i for i, score in enumerate(score_list) if score >= threshold]
    reasons = dict(zip(alerting, explainer.reasons(features[alerting]), strict=True))
    if not emit_scores:
        # Only alerts carry the feature map then; do not serialise every row for them.
        alerted = _feature_maps(features[alerting])
        maps: dict[int, orjson.Fragment] = dict(zip(alerting, alerted, strict=True))
        rows: Sequence[int] = alerting
    else:
        maps = dict(enumerate(_feature_maps(features)))
        rows = range(len(accepted))
    dumps = orjson.dumps
    for i in rows:
        record = accepted[i].record
        score = score_list[i]
        feature_map = maps[i]
        key = record["user_id"].encode()
        if emit_scores:
            out.append(
                OutMessage(
                    scores_topic,
                    key,
                    dumps(
                        {
                            "schema_version": 1,
                            "transaction_id": record["transaction_id"],
                            "user_id": record["user_id"],
                            "merchant_id": record["merchant_id"],
                            "event_time": record["timestamp"],
                            "score": score,
                            "model_name": model_name,
                            "model_version": model_version,
                            "features": feature_map,
                            "processed_at": processed_at,
                        }
                    ),
                )
            )
        if i in reasons:
            level = explain.severity(score, threshold)
            severities.append(level)
            why = reasons[i] or [
                {
                    "feature": "score",
                    "value": score,
                    "usual": threshold,
                    "text": f"score {score:.3f} is over the threshold {threshold:.3f}",
                }
            ]
            out.append(
                OutMessage(
                    alerts_topic,
                    key,
                    dumps(
                        {
                            "schema_version": 1,
                            "alert_id": str(uuid.uuid5(ALERT_NAMESPACE, record["transaction_id"])),
                            "transaction_id": record["transaction_id"],
                            "user_id": record["user_id"],
                            "transaction": record,
                            "score": score,
                            "threshold": threshold,
                            "severity": level,
                            "model_name": model_name,
                            "model_version": model_version,
                            "reasons": why,
                            "features": feature_map,
                            "event_time": record["timestamp"],
                            "processed_at": processed_at,
                        }
                    ),
                )
            )
    return out, severities

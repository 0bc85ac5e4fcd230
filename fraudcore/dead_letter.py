"""Dead letters: the one definition of what a dead-letter topic receives, for every service.

A dead letter is the rejected message's key, value and headers, plus headers that say why
and where it came from:

| header | value |
| --- | --- |
| `dlq.reason` | a short stable code (`oversized`, `schema_violation`, `delivery_failed`, ...) |
| `dlq.field` | the offending field, or empty |
| `dlq.detail` | what is wrong, in words (at most 1,000 bytes) |
| `dlq.source.topic`, `dlq.source.partition`, `dlq.source.offset` | where the message was |
| `dlq.original.size` | the value's size in bytes, when it was truncated |
| `dlq.truncated` | `true` when the value is only the first bytes of the original |

plus any service-specific `dlq.*` headers (alerting: the sink, attempts, last error).

A copy must fit in one produce request, or the dead letter would fail in turn: a value
up to the broker's limit plus these headers does not fit under that same limit. So a
dead letter whose key, value and headers come to more than `limit` bytes keeps only the
first bytes of its value, and says so. The limit comes from `dead_letter_limit`: the
producer's `message.max.bytes` (librdkafka's check, made when `produce` is called) and the
dead-letter topic's `max.message.bytes` (the broker's, made when the batch arrives),
less room for the record's framing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

Headers = list[tuple[str, str | bytes | None]]

# librdkafka's default message.max.bytes; the producers of this stack keep it.
PRODUCER_MAX_MESSAGE_BYTES = 1_000_000
# A record batch's framing and one record's own: well under 1 KB for one message.
FRAMING_BYTES = 1024
MAX_DETAIL_BYTES = 1000


class DeadLetter(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


def dead_letter(
    msg: Message,
    topic: str,
    reason: str,
    detail: str,
    field: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
    limit: int = PRODUCER_MAX_MESSAGE_BYTES - FRAMING_BYTES,
) -> DeadLetter:
    """The dead letter of a consumed message, as it was consumed."""
    # A consumed message's headers are a list of (name, bytes) pairs.
    original: Headers = list(msg.headers() or [])  # type: ignore[arg-type]
    source = (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
    return build(
        topic, msg.key(), msg.value(), original, source, reason, detail, field, extra, limit
    )


def build(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    original: Headers,
    source: tuple[str, int, int],
    reason: str,
    detail: str,
    field: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
    limit: int = PRODUCER_MAX_MESSAGE_BYTES - FRAMING_BYTES,
) -> DeadLetter:
    """A dead letter of `value` (from `source`: topic, partition, offset), its value
    truncated to fit `limit` bytes in all when it must be."""
    ours: Headers = [
        ("dlq.reason", reason.encode()),
        ("dlq.field", (field or "").encode()),
        ("dlq.detail", detail.encode()[:MAX_DETAIL_BYTES]),
        ("dlq.source.topic", source[0].encode()),
        ("dlq.source.partition", str(source[1]).encode()),
        ("dlq.source.offset", str(source[2]).encode()),
        *((f"dlq.{name}", text.encode()) for name, text in extra),
    ]
    headers = original + ours
    size = _size(key) + _size(value) + _headers_size(headers)
    if value is not None and size > limit:
        marks: Headers = [
            ("dlq.original.size", str(len(value)).encode()),
            ("dlq.truncated", b"true"),
        ]
        headers = original + ours + marks
        room = limit - _size(key) - _headers_size(headers)
        if room < 0:  # the original headers alone are too big: keep only ours
            headers = ours + marks
            room = max(0, limit - _size(key) - _headers_size(headers))
        value = value[:room]
    return DeadLetter(topic, key, value, headers)


def dead_letter_limit(admin: AdminClient, topic: str, timeout_s: float = 10.0) -> int:
    """The most bytes (key, value and headers) a dead letter to `topic` may have: under
    the producer's limit and the topic's own `max.message.bytes`."""
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        configs = admin.describe_configs([resource])[resource].result(timeout=timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise
        configs = {}  # created later with the broker's defaults, at least 1 MB
    entry = configs.get("max.message.bytes")
    topic_limit = (
        int(entry.value) if entry is not None and entry.value else PRODUCER_MAX_MESSAGE_BYTES
    )
    return min(PRODUCER_MAX_MESSAGE_BYTES, topic_limit) - FRAMING_BYTES


def _size(data: bytes | None) -> int:
    return 0 if data is None else len(data)


def _headers_size(headers: Headers) -> int:
    # librdkafka counts each header's name, value and a few bytes of lengths.
    return sum(len(name) + _size(value if isinstance(value, bytes | None) else value.encode()) + 8
               for name, value in headers)  # fmt: skip

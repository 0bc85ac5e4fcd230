"""The topics of the stack and how they are created."""

from __future__ import annotations

from dataclasses import dataclass

from fraudcore.settings import TopicSettings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()


def stack_topics(topics: TopicSettings, transactions_partitions: int = 6) -> list[TopicSpec]:
    """Every topic `make up` creates. transactions is keyed by user_id; scores and alerts
    use the same partition count so a user's outputs stay in one partition."""
    week = str(7 * 24 * 3600 * 1000)
    return [
        TopicSpec(topics.topic_transactions, transactions_partitions, (("retention.ms", week),)),
        TopicSpec(topics.topic_scores, transactions_partitions, (("retention.ms", week),)),
        TopicSpec(topics.topic_alerts, transactions_partitions, (("retention.ms", week),)),
        # Labels are the training ground truth: kept until deleted on purpose.
        TopicSpec(topics.topic_labels, 3, (("retention.ms", "-1"),)),
        TopicSpec(topics.topic_transactions_dlq, 1, (("retention.ms", week),)),
        TopicSpec(topics.topic_alerts_dlq, 1, (("retention.ms", week),)),
        TopicSpec(topics.topic_labels_dlq, 1, (("retention.ms", week),)),
    ]

"""The stack's topics, created once Kafka is up, with as many copies as it has brokers."""

from __future__ import annotations

import logging

from confluent_kafka.admin import AdminClient

from fraudcore.kafka import ensure_topics
from fraudcore.logs import kv
from fraudcore.settings import TopicSettings
from fraudcore.topics import stack_topics

logger = logging.getLogger(__name__)


def ensure_stack_topics(
    bootstrap: str, topics: TopicSettings, partitions: int, replicas: int = 1
) -> list[str]:
    """Create the stack topics that do not exist yet; returns the names created."""
    specs = stack_topics(topics, partitions)
    created = ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), specs, replicas=replicas)
    logger.info(
        "stack topics ready %s", kv(topics=len(specs), created=len(created), replicas=replicas)
    )
    return created

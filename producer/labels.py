"""Labels waiting for their available_at, released in that order as event time passes."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator


class PendingLabels:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, bytes, bytes, str]] = []
        self._seq = itertools.count()  # ties keep production order

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, available_at: float, key: bytes, value: bytes, label: str) -> None:
        heapq.heappush(self._heap, (available_at, next(self._seq), key, value, label))

    def due(self, watermark: float) -> Iterator[tuple[bytes, bytes, str]]:
        """Pop every label with available_at <= watermark, earliest first."""
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            _, _, key, value, label = heapq.heappop(heap)
            yield key, value, label

    def drain(self) -> Iterator[tuple[bytes, bytes, str]]:
        """Pop every label left, earliest first."""
        return self.due(float("inf"))

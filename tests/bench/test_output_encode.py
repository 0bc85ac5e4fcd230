"""bench.output_encode at a tiny size: every variant writes the scorer's documents, so its
timings compare like with like. Never a performance assertion (see bench/README.md)."""

from __future__ import annotations

import math

from bench.output_encode import measure


def test_every_variant_writes_the_scorers_documents() -> None:
    results = measure(rows=40, repeat=1)
    assert set(results) == {"orjson (scorer)", "msgspec Struct + Raw", "msgspec Struct + dict"}
    for name, (micros, same) in results.items():
        assert same, name
        assert math.isfinite(micros) and micros > 0, name

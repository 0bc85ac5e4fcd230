"""CPU per message of the scorer's pure pipeline steps: decode_batch and outputs.

    python -m bench.pipeline_cpu [--messages 20000] [--repeat 5]

No stack needed: the messages are the benchmark's synthetic transactions, the features
come from the offline builder and the scores are drawn so ~2 % alert. Reports the best of
`--repeat` runs of process CPU time (the machine is shared; the best run is the least
disturbed), in µs per message.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from confluent_kafka import Message

from bench.data import synthetic_slice
from fraudcore.offline import OfflineFeatureBuilder
from scorer import explain
from scorer.pipeline import decode_batch, outputs
from scorer.treeeval import compile_model
from trainer.models import ModelConfig, fit_model


def _best_cpu_us(step: Callable[[], object], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        step()
        best = min(best, time.process_time() - start)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    data = synthetic_slice("2026-11-01", 30, limit=args.messages)
    msgs = [
        Message(topic="transactions", partition=0, offset=i, key=k, value=v)
        for i, (k, v) in enumerate(data.encoded())
    ]
    n = len(msgs)
    now = float(data.event_ts[-1]) + 60
    accepted, rejected, _ = decode_batch(msgs, 16_384, 86_400.0, now)
    assert not rejected and len(accepted) == n

    features = OfflineFeatureBuilder().transactions((a.record, a.event_ts) for a in accepted)
    # A forest fitted on the data itself: the reasons' attribution walks real trees.
    model = fit_model(features, np.zeros(n, dtype=int), ModelConfig(kind="isolation_forest"))
    explainer = explain.Explainer(model, compile_model(model))
    scores = np.random.default_rng(3).random(n)

    def build() -> object:
        return outputs(
            accepted,
            features,
            scores,
            threshold=0.98,
            explainer=explainer,
            model_name="bench",
            model_version="1",
            scores_topic="scores",
            alerts_topic="alerts",
            emit_scores=True,
            processed_at="2026-11-30T00:00:00.000Z",
        )

    decode_us = _best_cpu_us(lambda: decode_batch(msgs, 16_384, 86_400.0, now), n, args.repeat)
    outputs_us = _best_cpu_us(build, n, args.repeat)
    print(f"messages={n} repeat={args.repeat} (best CPU µs per message)")
    print(f"decode_batch {decode_us:.2f}")
    print(f"outputs      {outputs_us:.2f}  (scores + ~2 % alerts with reasons)")


if __name__ == "__main__":
    main()

"""How fast the score messages are written: the scorer's orjson path against msgspec.

    python -m bench.output_encode [--rows 1000] [--repeat 30]

Times one batch's score messages (no alerts: they are 0.5 % of transactions), three ways,
on handbook-shaped records and a feature matrix with missing values:

- `orjson (scorer)`: `scorer.pipeline.outputs`, what the scorer runs: the feature maps of
  the whole batch from one orjson call into a bytes template, one `orjson.dumps` a message;
- `msgspec Struct + Raw`: a `msgspec.Struct` per message encoded by one
  `msgspec.json.Encoder`, with the same pre-encoded feature maps as `msgspec.Raw`;
- `msgspec Struct + dict`: the same Struct with the features as a dict of floats, which is
  what msgspec gives without the template.

Every variant's messages are checked to decode to the same documents as the scorer's.
Best of `--repeat`, in microseconds per message, on one core.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
import orjson
import typer
from rich.console import Console
from rich.table import Table

from bench.data import month
from fraudcore.features import FEATURE_NAMES
from scorer.pipeline import Accepted, feature_map_bytes, outputs

app = typer.Typer(add_completion=False, help=__doc__)
PROCESSED_AT = "2026-12-02T18:00:00.000000Z"


class ScoreMessage(msgspec.Struct):
    schema_version: int
    transaction_id: str
    user_id: str
    merchant_id: str
    event_time: str
    score: float
    model_name: str
    model_version: str
    features: Any
    processed_at: str


class _NoReasons:
    def reasons(self, rows: np.ndarray) -> list[Any]:
        return [None] * len(rows)


def _scorer(accepted: Sequence[Accepted], features: np.ndarray, scores: np.ndarray) -> list[bytes]:
    out, _ = outputs(
        accepted, features, scores, threshold=math.inf, explainer=_NoReasons(),  # type: ignore[arg-type]
        model_name="bench", model_version="1", scores_topic="scores", alerts_topic="alerts",
        emit_scores=True, processed_at=PROCESSED_AT,
    )  # fmt: skip
    return [message.value or b"" for message in out]


def _msgspec(
    with_template: bool,
) -> Callable[[Sequence[Accepted], np.ndarray, np.ndarray], list[bytes]]:
    encode = msgspec.json.Encoder().encode

    def run(accepted: Sequence[Accepted], features: np.ndarray, scores: np.ndarray) -> list[bytes]:
        if with_template:
            maps: list[Any] = [msgspec.Raw(m) for m in feature_map_bytes(features)]
        else:
            maps = [
                {n: (None if v != v else v) for n, v in zip(FEATURE_NAMES, row, strict=True)}
                for row in features.tolist()
            ]
        out = []
        for record, score, feature_map in zip(
            (a.record for a in accepted), scores.tolist(), maps, strict=True
        ):
            message = ScoreMessage(
                1, record["transaction_id"], record["user_id"], record["merchant_id"],
                record["timestamp"], score, "bench", "1", feature_map, PROCESSED_AT,
            )  # fmt: skip
            out.append(encode(message))
        return out

    return run


def _best(run: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def measure(rows: int, repeat: int) -> dict[str, tuple[float, bool]]:
    """{variant: (best µs per message, whether its messages decode to the scorer's)}."""
    data = month("2018-07-01", 1, limit=rows)
    rng = np.random.default_rng(3)
    features = rng.lognormal(1.0, 1.5, (len(data.records), len(FEATURE_NAMES)))
    features[rng.random(features.shape) < 0.15] = np.nan
    scores = rng.random(len(data.records))
    accepted = [Accepted(None, r, 0.0, None) for r in data.records]  # type: ignore[arg-type]
    variants = {
        "orjson (scorer)": _scorer,
        "msgspec Struct + Raw": _msgspec(with_template=True),
        "msgspec Struct + dict": _msgspec(with_template=False),
    }
    reference = [orjson.loads(m) for m in _scorer(accepted, features, scores)]
    out = {}
    for name, variant in variants.items():
        same = [orjson.loads(m) for m in variant(accepted, features, scores)] == reference
        seconds = _best(lambda v=variant: v(accepted, features, scores), repeat)  # type: ignore[misc]
        out[name] = (seconds * 1e6 / len(accepted), same)
    return out


@app.command()
def main(
    rows: Annotated[int, typer.Option(help="Messages in the batch.")] = 1000,
    repeat: Annotated[int, typer.Option(help="Timed repetitions; the best counts.")] = 30,
) -> None:
    table = Table(title=f"score messages, batch of {rows}, best of {repeat}")
    for column in ("variant", "µs / message", "same documents"):
        table.add_column(column)
    for name, (micros, same) in measure(rows, repeat).items():
        table.add_row(name, f"{micros:.2f}", "yes" if same else "NO")
    Console().print(table)


if __name__ == "__main__":
    app()

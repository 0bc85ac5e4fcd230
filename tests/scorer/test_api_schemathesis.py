"""Schemathesis against the scorer's HTTP API: `python -m scorer` on the test stack (its
own topics, a model registered in the test MLflow, state in the test Redis fed by a
scored stream), over HTTP, from the OpenAPI document it serves.

Every generated request, valid or not, gets no 5xx, a documented status, content type and
body shape. POST /score reads its body itself; the document gives it the transactions.v1
schema (one or an array), so schemathesis builds transactions and breaks them. Some of
those bodies are moved to users the stream left state for and to a recent time, so
that the features really come from Redis and the transactions are scored, not only
refused.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import strategies as st
from schemathesis import Case, CheckFunction, GenerationMode, HookContext
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bench.deployment import ServiceProcess
from fraudcore.contracts import format_time, load_schema
from tests import schemathesis_util
from tests.kafka_util import produce_records, read_topic
from tests.scorer.harness import scorer_deployment
from tests.scorer.models import isolation_model, register
from tests.scorer.streams import random_stream
from tests.stack import TestStack

OPERATIONS = ["GET /health", "GET /metrics", "GET /model", "GET /ready", "POST /score"]


class ApiUnderTest:
    def __init__(self, scorer: ServiceProcess, users: list[str], merchants: list[str]) -> None:
        self.scorer = scorer
        self.users = users
        self.merchants = merchants


@pytest.fixture(scope="module")
def deployment(stack: TestStack) -> Iterator[ApiUnderTest]:
    """One scorer for the whole module: starting it takes seconds, and no operation here
    changes its state (POST /score is read-only)."""
    model_name = f"scorer-api-{uuid.uuid4().hex[:12]}"
    register(stack.mlflow_uri, model_name, isolation_model(seed=5))
    world = scorer_deployment(stack, model_name, partitions=1)
    records = [record for record, _ in random_stream(seed=31, n=60, users=6, merchants=3)]
    kafka = {"bootstrap.servers": stack.kafka_bootstrap}
    produce_records(kafka, world.transactions, records)
    scorer = world.start_scorer()
    try:
        scorer.wait_ready()
        assert len(read_topic(kafka, world.scores, expect=len(records))) == len(records)
        yield ApiUnderTest(
            scorer,
            sorted({r["user_id"] for r in records}),
            sorted({r["merchant_id"] for r in records}),
        )
    finally:
        code = scorer.stop()
        world.cleanup()
    assert code == 0, scorer.tail()


def test_the_served_document_has_the_operations_tested(deployment: ApiUnderTest) -> None:
    schema = schemathesis_util.load(deployment.scorer.url)
    assert schemathesis_util.labels(schema) == sorted(OPERATIONS)


def test_the_score_body_is_described_as_a_transaction_or_an_array(deployment: ApiUnderTest) -> None:
    document = httpx.get(f"{deployment.scorer.url}/openapi.json").json()
    body = document["paths"]["/score"]["post"]["requestBody"]
    one, array = body["content"]["application/json"]["schema"]["oneOf"]
    transaction = load_schema("transactions")
    assert one["required"] == transaction["required"]
    assert set(one["properties"]) == set(transaction["properties"])
    assert one["properties"]["amount"]["maximum"] == transaction["properties"]["amount"]["maximum"]
    assert array == {"type": "array", "items": one}
    assert body["required"] is True


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_generated_request_breaks_the_api(deployment: ApiUnderTest, label: str) -> None:
    schema = schemathesis_util.load(deployment.scorer.url)
    recent = format_time(time.time() - 3600)

    def to_known_state(body: Any, user: str, merchant: str) -> Any:
        if isinstance(body, dict):
            return {**body, "user_id": user, "merchant_id": merchant, "timestamp": recent}
        if isinstance(body, list):
            return [to_known_state(item, user, merchant) for item in body]
        return body

    def before_generate_body(
        context: HookContext, strategy: st.SearchStrategy[Any]
    ) -> st.SearchStrategy[Any]:
        known = st.tuples(
            strategy, st.sampled_from(deployment.users), st.sampled_from(deployment.merchants)
        )
        return st.one_of(strategy, known.map(lambda drawn: to_known_state(*drawn)))

    op = schemathesis_util.operation(schema, label)
    seen: Counter[tuple[GenerationMode, int]] = Counter()
    scored: Counter[bool] = Counter()  # transactions scored, by "its user had state"
    for mode in schemathesis_util.modes(op):

        def check(case: Case, mode: GenerationMode = mode) -> None:
            # A transaction the schema takes may still be refused: its time must be
            # plausible (2000-01-01 to a day from now), which no JSON Schema can say.
            excluded: list[CheckFunction] = (
                [positive_data_acceptance] if label == "POST /score" else []
            )
            response = case.call_and_validate(excluded_checks=excluded)
            seen[mode, response.status_code] += 1
            if label == "POST /score" and response.status_code == 200:
                answer = response.json()
                for result in answer if isinstance(answer, list) else [answer]:
                    # A user with no state has no previous transaction.
                    scored[result["features"]["user_seconds_since_prev"] is not None] += 1

        # Only valid bodies are moved to known state: a broken one must stay broken.
        hooks = {"before_generate_body": before_generate_body} if mode.is_positive else {}
        schemathesis_util.run(op, mode, check, hooks=hooks)

    assert any(200 <= status < 300 for m, status in seen if m is GenerationMode.POSITIVE), seen
    if label == "POST /score":
        # Transactions were scored with a user's state read from Redis, and some refused.
        assert scored[True] > 0, scored
        assert seen[GenerationMode.POSITIVE, 422] > 0, seen


def test_score_names_the_field_of_a_number_no_double_holds(deployment: ApiUnderTest) -> None:
    def transaction(amount: str = "5", lat: str = "48.85") -> str:
        return (
            '{"schema_version":1,"transaction_id":"tx-1","user_id":"u-1","merchant_id":"m-1",'
            f'"amount":{amount},"timestamp":"{format_time(time.time() - 60)}","lat":{lat}}}'
        )

    url = f"{deployment.scorer.url}/score"
    one = httpx.post(url, content=transaction(lat="NaN").encode())
    assert one.status_code == 422
    [error] = one.json()["detail"]
    assert (error["field"], error["reason"]) == ("lat", "unparseable")
    assert error["msg"].startswith("lat: ") and "NaN is not a finite number" in error["msg"]

    batch = httpx.post(url, content=f"[{transaction()}, {transaction(amount='1e400')}]".encode())
    assert batch.status_code == 422
    [error] = batch.json()["detail"]
    assert (error["index"], error["field"], error["reason"]) == (1, "amount", "unparseable")

    assert httpx.post(url, content=f"[{transaction()}]".encode()).status_code == 200

"""Schemathesis against the alerting API: `python -m alerting` with its own SQLite store
and its Kafka label publisher on the test stack, over HTTP, from the OpenAPI document it
serves.

Every generated request, valid or not, gets no 5xx, a documented status, content type and
body shape, and the checks on accepting valid and refusing invalid input (all of
schemathesis's checks). Path parameters are sometimes ids of alerts stored for the test,
so details and verdicts are really read and written; the feedback endpoint is called with
the API key, and each of its cases also without one (401) and with a wrong one (403).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode, HookContext

from tests import schemathesis_util
from tests.alerting.helpers import (
    Service,
    ServiceConfig,
    consume,
    make_alert,
    produce,
    wait_until,
)

OPERATIONS = [
    "GET /alerts",
    "GET /alerts/{alert_id}",
    "GET /health",
    "GET /metrics",
    "GET /ready",
    "POST /alerts/{alert_id}/feedback",
]


@pytest.fixture
def service_with_alerts(
    service_config: ServiceConfig,
    start_service: Callable[..., Service],
    unique_name: Callable[[str], str],
) -> tuple[Service, list[str]]:
    service = start_service()
    users = [unique_name("user") for _ in range(3)]
    alerts = [make_alert(users[i % 3], severity=("low", "high")[i % 2]) for i in range(6)]
    produce(service_config.bootstrap, service_config.alerts_topic, alerts)
    assert wait_until(lambda: service.alerts()["total"] == len(alerts))
    return service, [a["alert_id"] for a in alerts]


def test_the_served_document_has_the_operations_tested(
    start_service: Callable[..., Service],
) -> None:
    service = start_service()
    assert schemathesis_util.labels(schemathesis_util.load(service.config.base_url)) == sorted(
        OPERATIONS
    )


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_generated_request_breaks_the_api(
    service_with_alerts: tuple[Service, list[str]], service_config: ServiceConfig, label: str
) -> None:
    service, alert_ids = service_with_alerts
    schema = schemathesis_util.load(service.config.base_url)

    def before_generate_path_parameters(
        context: HookContext, strategy: st.SearchStrategy[dict[str, Any]]
    ) -> st.SearchStrategy[dict[str, Any]]:
        if context.operation is None or "{alert_id}" not in context.operation.path:
            return strategy
        known = st.sampled_from(alert_ids).map(lambda alert_id: {"alert_id": alert_id})
        return st.one_of(strategy, known)

    # The key is not generated: each case is sent without it, with a wrong one and with it.
    schema.config.generation.update(with_security_parameters=False)
    op = schemathesis_util.operation(schema, label)
    key = service_config.api_key
    seen: Counter[tuple[GenerationMode, int]] = Counter()
    for mode in schemathesis_util.modes(op):

        def check(case: Case, mode: GenerationMode = mode) -> None:
            if op.definition.raw.get("security"):
                assert case.call().status_code == 401
                assert case.call(headers={"X-API-Key": f"not-{key}"}).status_code == 403
                response = case.call_and_validate(headers={"X-API-Key": key})
            else:
                response = case.call_and_validate()
            seen[mode, response.status_code] += 1

        schemathesis_util.run(
            op,
            mode,
            check,
            hooks={"before_generate_path_parameters": before_generate_path_parameters},
        )

    # The cases reached the service's inner workings, not only its input checks.
    assert any(200 <= status < 300 for m, status in seen if m is GenerationMode.POSITIVE), seen
    if "{alert_id}" in label:
        # Stored alerts were read (and, for feedback, reviewed).
        assert seen[GenerationMode.POSITIVE, 200] > 0, seen
    if label.endswith("/feedback"):
        verdicts = sum(n for (_, status), n in seen.items() if status == 200)
        labels = consume(service_config.bootstrap, service_config.labels_topic, verdicts)
        assert len(labels) == verdicts  # one label published for each verdict answered 200
        assert service.alerts(status="reviewed")["total"] > 0

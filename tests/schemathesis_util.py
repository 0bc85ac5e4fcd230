"""Schemathesis for the services' HTTP APIs, run inside ordinary pytest tests.

The services are real processes on the test stack, so each test reads the OpenAPI document
the process serves (the one a client sees) and runs one operation's generated cases
through Hypothesis itself. (schemathesis.pytest.from_fixture, the loader meant for a
schema that only exists once fixtures ran, fails on pytest 9: it sets `Item._nodeid`,
which pytest 9 no longer has.)

Runs are bounded and derandomized: Hypothesis derives its seed from the test code, and
keeps no example database, so a run does the same requests every time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.core.result import Err
from schemathesis.hooks import HookDispatcher, HookScope

# Examples per operation and mode: the whole of both APIs stays well under a minute on
# this project's 2-core machines.
MAX_EXAMPLES = 100


def load(base_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


def labels(schema: schemathesis.BaseSchema) -> list[str]:
    """Every operation of the document ("GET /alerts"); an operation it cannot read fails."""
    found = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        found.append(result.ok().label)
    return sorted(found)


def operation(schema: schemathesis.BaseSchema, label: str) -> APIOperation:
    found = schema.find_operation_by_label(label)
    assert found is not None, f"{label} is not in the served OpenAPI document"
    return found


def modes(op: APIOperation) -> list[GenerationMode]:
    """Positive cases always; negative ones where there is an input to break (a free-form
    path string, or no input at all, has no invalid value to generate)."""
    if len(op.query) or len(op.body) or len(op.headers):
        return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    return [GenerationMode.POSITIVE]


def run(
    op: APIOperation,
    mode: GenerationMode,
    check: Callable[[Case], None],
    max_examples: int = MAX_EXAMPLES,
    hooks: dict[str, Callable[..., Any]] | None = None,
) -> None:
    """`check` every case Hypothesis generates for `op` in `mode`; a failure is shrunk to
    its smallest case and raised with schemathesis's report (a curl line to replay it).
    `hooks`: schemathesis hooks by name (before_generate_body, ...) for this run only."""
    dispatcher = HookDispatcher(scope=HookScope.TEST)
    for name, hook in (hooks or {}).items():
        dispatcher.register_hook_with_name(hook, name)

    @given(case=op.as_strategy(generation_mode=mode, hooks=dispatcher))
    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,  # over HTTP to a live service: time is the service's, not the data's
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def each(case: Case) -> None:
        check(case)

    each()

"""schemathesis over every operation of the gateway's own /openapi.json, against the real app under
Hypercorn, the real host and PostgreSQL, authenticated with an operator's API key and then a member's:
no answer is a 5xx, and every answer's status code, content type and body are those the document states.

Bounded and reproducible: hypothesis is derandomized, a few examples per operation and mode (valid and
invalid input), so the whole run stays well under 90 s on 2 cores.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from opentier.gateway.identity.bootstrap import create_admin
from tests.gateway.conftest import PASSWORD
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    limits_options_fixture,
    signed_in_key,
    streaming_host_fixture,
    streaming_options_fixture,
)

#: The operator tenant of this module: its own, so that nothing fuzzed here touches another test's tenants.
OPERATOR = f"ops-{uuid.uuid4().hex[:8]}"
pytestmark = pytest.mark.auth(operator_tenant=OPERATOR)

Operation = APIOperation[Any, Any, Any, Any]
#: Examples per operation and generation mode.
EXAMPLES = 10
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def run_schemathesis(document: dict[str, Any], base_url: str, key: str) -> tuple[list[str], Counter[str]]:
    """Fuzz every operation of ``document`` at ``base_url`` with ``key``: the failures, one line each, and
    the requests sent to each operation."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    calls: Counter[str] = Counter()
    session = requests.Session()
    headers = {"Authorization": f"Bearer {key}"}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"/openapi.json has an invalid operation: {result}"
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            check = _checked(
                operation,
                mode=mode,
                base_url=base_url,
                session=session,
                headers=headers,
                failures=failures,
                calls=calls,
            )
            try:
                check()
            except Unsatisfiable:
                # Nothing to make invalid: an operation without parameters or body has no negative input.
                assert mode is GenerationMode.NEGATIVE, operation.label
    return failures, calls


def _checked(
    operation: Operation,
    *,
    mode: GenerationMode,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
    failures: list[str],
    calls: Counter[str],
) -> Callable[[], None]:
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=strategy)
    def check(case: Case[Operation]) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        calls[operation.label] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (Failure, FailureGroup) as err:
            summary = str(err).strip().splitlines()
            failures.append(
                f"{mode.value} {operation.method.upper()} {operation.path} → {response.status_code}: "
                + " | ".join(summary[:6])
                + f" | body={response.content[:300]!r}"
            )

    return check


#: Rate limits high enough that the run meets none (429 answers are checked by tests/gateway/test_rate_limits.py).
HIGH_LIMITS = {
    "per_api_key": "100000 per minute",
    "per_user": "100000 per minute",
    "per_address": "100000 per minute",
}


@pytest.mark.parametrize("limits_options", [HIGH_LIMITS], indirect=True)
async def test_every_route_answers_as_documented(chat_gateway: ChatGateway) -> None:
    api = chat_gateway.api
    email = f"operator-{uuid.uuid4().hex[:8]}@example.org"
    await create_admin(chat_gateway.settings, email=email, password=PASSWORD, tenant=OPERATOR)
    login = await api.post("/v1/auth/login", json={"tenant": OPERATOR, "email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    created = await api.post(
        "/v1/keys",
        json={"name": "schemathesis", "scopes": ["admin", "chat", "ingest", "read"]},
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
    )
    assert created.status_code == 201, created.text
    member = await signed_in_key(chat_gateway)
    document = (await api.client.get("/openapi.json")).json()

    operations = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    failures: list[str] = []
    for key in (created.json()["key"], member.key):
        found, calls = await asyncio.to_thread(run_schemathesis, document, chat_gateway.url, key)
        failures += found
        assert set(calls) == operations, operations ^ set(calls)  # every route was tried
    assert not failures, "\n".join(failures)

"""What an operator sees: Prometheus metrics at /metrics, one trace from the gateway into the host (for
a request and for a chat turn), JSON log lines carrying the request id, and the health endpoints."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from opentier.config import Settings
from opentier.gateway.observability import Observability
from opentier.gateway.observability.logs import JsonFormatter, RequestContextFilter
from opentier.gateway.state import gateway_state
from tests.gateway.served import (  # noqa: F401 - fixtures
    Served,
    ServedAPI,
    new_member,
    running_host_fixture,
    served_api_fixture,
    served_fixture,
    served_settings_fixture,
)
from tests.gateway.streaming import (  # noqa: F401 - fixtures
    ChatGateway,
    chat_gateway_fixture,
    chat_settings_fixture,
    host_chat_options_fixture,
    limits_options_fixture,
    read_turn,
    receive,
    signed_in_key,
    streaming_host_fixture,
    streaming_options_fixture,
    ws_connect,
)

CHAT = "opentier.intelligence.v1.ChatService/Chat"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus exposition, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_requests_host_errors_and_rejections(
    served: Served, served_api: ServedAPI, served_settings: Settings
) -> None:
    member = await new_member(served_settings, served_api)
    missing = "00000000-0000-0000-0000-000000000000"
    for _ in range(2):
        assert (await served_api.get(f"/v1/collections/{missing}", headers=member.headers)).status_code == 404
    assert (await served_api.get("/v1/collections", headers=member.headers)).status_code == 200
    assert (await served_api.client.get(f"/no/such/{missing}")).status_code == 404
    # The login throttle (5 per minute per account in these tests) refuses the sixth wrong password.
    tenant = (await served_api.get("/v1/auth/me", headers=member.headers)).json()["tenant"]["name"]
    statuses = []
    for _ in range(7):
        wrong = {"tenant": tenant, "email": "nobody@example.org", "password": "wrong password!"}
        statuses.append((await served_api.post("/v1/auth/login", json=wrong)).status_code)
    assert 429 in statuses

    response = await served_api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    item = "/v1/collections/<collection_id>"
    assert value(found, "opentier_gateway_requests_total", method="GET", route=item, status="404") == 2
    assert (
        value(found, "opentier_gateway_requests_total", method="GET", route="/v1/collections", status="200")
        == 1
    )
    # A path that matched no route is one series, whatever the path.
    assert (
        value(found, "opentier_gateway_requests_total", method="GET", route="<unmatched>", status="404") == 1
    )
    assert value(found, "opentier_gateway_request_duration_seconds_count", method="GET", route=item) == 2
    assert (
        value(
            found,
            "opentier_gateway_host_errors_total",
            method="CollectionService/GetCollection",
            code="not_found",
        )
        == 2
    )
    assert value(
        found, "opentier_gateway_rate_limit_rejections_total", route="/v1/auth/login"
    ) == statuses.count(429)
    families = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "opentier_gateway_stream_duration_seconds",
        "opentier_gateway_time_to_first_token_seconds",
        "opentier_gateway_tokens_streamed",
        "opentier_gateway_requests_in_flight",
    } <= families


@pytest.fixture
def host_spans() -> Iterator[InMemorySpanExporter]:
    """The spans the host records: its spans go to the process's global tracer provider."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


async def test_a_trace_started_at_the_gateway_continues_in_the_host(
    served: Served, served_api: ServedAPI, served_settings: Settings, host_spans: InMemorySpanExporter
) -> None:
    observability = gateway_state(served.app).extras["observability"]
    assert isinstance(observability, Observability)
    gateway_spans = InMemorySpanExporter()
    observability.tracer_provider.add_span_processor(SimpleSpanProcessor(gateway_spans))
    member = await new_member(served_settings, served_api)

    response = await served_api.post("/v1/search", json={"query": "wings"}, headers=member.headers)
    assert response.status_code == 200, response.text

    [server_span] = [span for span in gateway_spans.get_finished_spans() if span.name == "POST /v1/search"]
    assert server_span.kind == trace.SpanKind.SERVER
    assert server_span.attributes is not None
    assert server_span.attributes["http.response.status_code"] == 200
    assert server_span.attributes["opentier.request_id"] == response.headers["x-request-id"]
    [client_span] = [
        span for span in gateway_spans.get_finished_spans() if span.kind == trace.SpanKind.CLIENT
    ]
    assert client_span.name == "opentier.intelligence.v1.SearchService/Search"
    assert client_span.parent is not None and client_span.parent.span_id == server_span.context.span_id
    [host_span] = [
        span
        for span in host_spans.get_finished_spans()
        if span.name == "opentier.intelligence.v1.SearchService/Search"
    ]
    assert host_span.kind == trace.SpanKind.SERVER
    assert host_span.context.trace_id == server_span.context.trace_id
    assert host_span.parent is not None and host_span.parent.span_id == client_span.context.span_id


async def finished(exporter: InMemorySpanExporter, name: str, count: int = 1) -> Sequence[ReadableSpan]:
    """The finished spans called ``name``, once there are ``count`` (a stream's span ends after it)."""
    async with asyncio.timeout(10):
        while len(found := [s for s in exporter.get_finished_spans() if s.name == name]) < count:
            await asyncio.sleep(0.02)
    return found


async def test_a_chat_turn_continues_the_gateways_trace_in_the_host(
    chat_gateway: ChatGateway, host_spans: InMemorySpanExporter
) -> None:
    observability = gateway_state(chat_gateway.app).extras["observability"]
    assert isinstance(observability, Observability)
    gateway_spans = InMemorySpanExporter()
    observability.tracer_provider.add_span_processor(SimpleSpanProcessor(gateway_spans))
    user = await signed_in_key(chat_gateway)

    # Over SSE: the turn's CLIENT span is the request's child; the host's span is the CLIENT span's.
    response = await chat_gateway.api.post(
        "/v1/chat/stream", json={"message": "Hello"}, headers=user.key_headers
    )
    assert response.status_code == 200 and "event: done" in response.text
    [request_span] = await finished(gateway_spans, "POST /v1/chat/stream")
    [client_span] = await finished(gateway_spans, CHAT)
    assert client_span.kind == trace.SpanKind.CLIENT
    assert client_span.parent is not None and client_span.parent.span_id == request_span.context.span_id
    # The gateway cancels the call once `done` arrived (unless the host's end came first): not an error.
    attributes = client_span.attributes or {}
    assert attributes.get("opentier.cancelled_by_gateway") or attributes["rpc.grpc.status_code"] == 0
    assert client_span.status.status_code != trace.StatusCode.ERROR
    [host_span] = await finished(host_spans, CHAT)
    assert host_span.kind == trace.SpanKind.SERVER
    assert host_span.context.trace_id == request_span.context.trace_id
    assert host_span.parent is not None and host_span.parent.span_id == client_span.context.span_id

    # Over a WebSocket: each turn joins the connection's trace.
    async with ws_connect(chat_gateway, key=user.key) as ws:
        assert (await receive(ws))["type"] == "hello"
        await ws.send(json.dumps({"type": "start", "message": "Hello again"}))
        assert (await read_turn(ws))[-1]["status"] == "complete"
    [socket_span] = await finished(gateway_spans, "WS /v1/chat/ws")
    host_chats = await finished(host_spans, CHAT, count=2)
    assert [span.context.trace_id for span in host_chats] == [
        request_span.context.trace_id,
        socket_span.context.trace_id,
    ]


async def test_access_log_lines_are_json_with_the_request_id(served: Served, served_api: ServedAPI) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("opentier.gateway.access")
    access.addHandler(handler)
    previous = access.level
    access.setLevel(logging.INFO)
    try:
        response = await served_api.get("/v1/collections", headers={"X-Request-ID": "req-from-client-42"})
    finally:
        access.removeHandler(handler)
        access.setLevel(previous)
    assert response.status_code == 401
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["request_id"] == "req-from-client-42" == response.json()["error"]["request_id"]
    assert line["route"] == "/v1/collections" and line["status"] == 401 and line["http_method"] == "GET"
    assert line["level"] == "INFO" and line["logger"] == "opentier.gateway.access"
    assert line["duration_ms"] >= 0 and "Authorization" not in stream.getvalue()


async def test_health_endpoints(served: Served, served_api: ServedAPI, served_settings: Settings) -> None:
    assert (await served_api.get("/healthz")).json() == {"status": "ok"}
    ready = await served_api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "hosts": {served_settings.gateway.host_targets[0]: "SERVING"}}
    docs = await served_api.client.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text

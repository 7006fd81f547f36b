"""The gateway's Prometheus metrics, in a registry of its own per app (several apps can share a process).

Requests are labelled by route template (``/v1/collections/<collection_id>``), never by raw path, so the
number of series stays bounded. The streaming metrics are declared here for the chat routes to feed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "opentier_gateway"
#: Label of a request that matched no route (kept constant so scanners cannot add series).
UNMATCHED = "<unmatched>"
CONTENT_TYPE = CONTENT_TYPE_LATEST

_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STREAM_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class GatewayMetrics:
    """Every metric the gateway exposes at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from receiving a request to the end of its response, by method and route template.",
            ("method", "route"),
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight", "Requests being handled now.", registry=self.registry
        )
        self.rate_limited = Counter(
            f"{PREFIX}_rate_limit_rejections",
            "Requests refused with 429 (rate limits, quotas, login throttling), by route template.",
            ("route",),
            registry=self.registry,
        )
        self.host_errors = Counter(
            f"{PREFIX}_host_errors",
            "Failed calls to the intelligence host, by method and error code (the host's "
            "opentier-error-code, or the gRPC status when the call never reached a servicer).",
            ("method", "code"),
            registry=self.registry,
        )
        self.stream_duration = Histogram(
            f"{PREFIX}_stream_duration_seconds",
            "Lifetime of streamed responses (WebSocket, server-sent events), by kind.",
            ("kind",),
            buckets=_STREAM_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time from a chat request to the first answer token sent to the client.",
            buckets=_STREAM_BUCKETS,
            registry=self.registry,
        )
        self.tokens_streamed = Counter(
            f"{PREFIX}_tokens_streamed",
            "Answer tokens streamed to clients.",
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_duration.labels(method, route).observe(seconds)
        if status == 429:
            self.rate_limited.labels(route).inc()

    def host_call_failed(self, method: str, code: str) -> None:
        self.host_errors.labels(method, code).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

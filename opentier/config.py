"""Settings: one ``opentier.toml`` plus ``OPENTIER_*`` environment variables.

The file is found through ``--config``, then ``OPENTIER_CONFIG``, then ``./opentier.toml`` if it exists.
Environment variables win over the file; ``__`` separates nesting (``OPENTIER_DATABASE__URL``).
Secrets (``SecretStr`` fields) are read from the environment only: a secret written in the file stops
start-up with a message saying which variable to use instead.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from opentier.errors import ConfigError
from opentier.machine import available_cores

ENV_PREFIX = "OPENTIER_"
CONFIG_ENV = "OPENTIER_CONFIG"
DEFAULT_CONFIG_NAME = "opentier.toml"
#: Values that are never accepted as a secret outside development.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "password", "opentier"})


class Section(BaseModel):
    """Base for config sections: unknown keys are an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class DatabaseSettings(Section):
    url: str | None = Field(
        default=None,
        description="PostgreSQL URL of an existing server (postgresql://user@host:port/db). When set, "
        "OpenTier starts no embedded server. Put the password in OPENTIER_DATABASE__PASSWORD, not here.",
    )
    password: SecretStr | None = Field(default=None, description="Password for `url` (environment only).")
    embedded_dir: Path | None = Field(
        default=None,
        description="Data folder of the embedded PostgreSQL; default: <data_dir>/postgres.",
    )
    embedded_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="TCP port on 127.0.0.1 for the embedded server; 0 = unix socket only.",
    )
    name: str = Field(
        default="opentier",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="Database name (created in the embedded server on first start).",
    )
    pool_size: int = Field(default=5, ge=1, le=100, description="Connections kept per process.")
    connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Give up connecting to PostgreSQL after this long."
    )
    start_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Give up waiting for the embedded server to start after this long.",
    )

    @model_validator(mode="after")
    def _no_password_in_url(self) -> DatabaseSettings:
        if self.url is not None:
            from sqlalchemy.engine import make_url

            try:
                parsed = make_url(self.url)
            except Exception as err:
                raise ValueError(f"database.url {self.url!r} is not a database URL: {err}") from err
            if parsed.password:
                raise ValueError(
                    "database.url must not contain a password; set OPENTIER_DATABASE__PASSWORD instead"
                )
        return self


class HostSettings(Section):
    address: str = Field(
        default="127.0.0.1",
        description="Interface the gRPC host listens on; keep it on loopback unless behind mTLS.",
    )
    port: int = Field(default=50051, ge=0, le=65535, description="0 lets the system pick one.")
    token: SecretStr | None = Field(
        default=None,
        description="Shared credential the gateway sends to the host (environment only). When unset, "
        "`opentier up` and `opentier host` create one in <data_dir>/host.token.",
    )
    grace_seconds: float = Field(default=10.0, ge=0, description="Shutdown grace for in-flight calls.")
    max_message_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Largest gRPC message either way (uploads)."
    )


class GatewaySettings(Section):
    address: str = Field(default="127.0.0.1", description="Interface the public HTTP gateway listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port of the gateway.")
    jwt_secret: SecretStr | None = Field(
        default=None, description="Key that signs access tokens (environment only)."
    )
    host_deadline_seconds: float = Field(
        default=30.0, gt=0, description="Deadline of each unary call the gateway makes to the host."
    )
    host_targets: list[str] = Field(
        default_factory=list,
        description="gRPC targets of the intelligence hosts (`host:port`, `unix:/path`); calls go round "
        "robin over them. Empty: the local host at host.address/host.port.",
    )
    host_channels: int = Field(
        default=2, ge=1, le=64, description="gRPC channels opened to each host target (round robin)."
    )
    retry_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Tries of an idempotent call (get, list, search) whose host was unavailable; "
        "writes and streams are tried once.",
    )
    retry_initial_backoff_seconds: float = Field(
        default=0.1, gt=0, description="Wait before the first retry; doubled each time, with full jitter."
    )
    retry_max_backoff_seconds: float = Field(default=2.0, gt=0, description="Longest wait between retries.")
    retry_after_seconds: int = Field(
        default=5, ge=1, description="`Retry-After` of a 503 answered while the host is unavailable."
    )
    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024,
        ge=1,
        description="Largest document upload (POST /v1/collections/{id}/documents) in bytes; a larger "
        "one is refused with 413 `upload_too_large` as soon as the limit is passed. Keep it below "
        "host.max_message_bytes.",
    )
    max_json_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest JSON request body of the other routes, in bytes."
    )
    metrics: bool = Field(default=True, description="Serve Prometheus metrics at /metrics.")
    tracing: Literal["none", "console", "otlp"] = Field(
        default="none",
        description="Where OpenTelemetry spans go: nowhere, to standard output, or to an OTLP/HTTP "
        "collector at `otlp_endpoint`. Trace context is propagated to the host in every case.",
    )
    otlp_endpoint: str = Field(
        default="http://127.0.0.1:4318/v1/traces",
        description="OTLP/HTTP traces endpoint used when tracing is `otlp`.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Gateway log lines: one JSON object each (with request_id) or text."
    )
    shutdown_grace_seconds: float = Field(
        default=10.0,
        ge=0,
        description="On SIGINT/SIGTERM, how long in-flight requests may take to finish before the "
        "gateway stops.",
    )
    readiness_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Time limit of the host health check behind /readyz."
    )

    @model_validator(mode="after")
    def _backoff_in_order(self) -> GatewaySettings:
        if self.retry_max_backoff_seconds < self.retry_initial_backoff_seconds:
            raise ValueError(
                f"gateway.retry_max_backoff_seconds ({self.retry_max_backoff_seconds}) must not be below "
                f"gateway.retry_initial_backoff_seconds ({self.retry_initial_backoff_seconds})"
            )
        return self


class StreamingSettings(Section):
    """Chat streams through the gateway: WebSocket ``/v1/chat/ws``, SSE ``/v1/chat/stream`` and the
    OpenAI-compatible ``/v1/chat/completions``."""

    heartbeat_seconds: float = Field(
        default=15.0, gt=0, description="A heartbeat is sent on an idle WebSocket or SSE stream this often."
    )
    send_buffer_events: int = Field(
        default=256,
        ge=8,
        le=65536,
        description="Events held for one connection while its client is slow to read; a full buffer "
        "pauses the turn (backpressure).",
    )
    slow_client_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A client whose buffer stays full this long is closed (WebSocket close code 4408, "
        "`slow_consumer`) and its turn cancelled, rather than holding memory.",
    )
    max_frame_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Largest WebSocket message a client may send."
    )
    replay_events: int = Field(
        default=4096,
        ge=16,
        description="Events an SSE stream keeps for clients that reconnect with Last-Event-ID.",
    )
    resume_window_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long an SSE turn keeps running, and its events are kept, after its client "
        "disconnected; a reconnect within it resumes, after it the turn is cancelled.",
    )
    turn_deadline_seconds: float = Field(
        default=300.0, gt=0, description="Longest a chat turn may stream through the gateway."
    )
    revalidate_seconds: float = Field(
        default=5.0,
        gt=0,
        description="A running turn checks its caller against the database this often, so a tenant "
        "suspended, a user disabled or a key revoked through another gateway ends it too (this "
        "gateway's own admin operations end it at once).",
    )


class LimitsSettings(Section):
    """Request rate limits (``limits`` notation, e.g. ``"60 per minute; 1000 per hour"``, empty: none)
    and token quotas (tokens, 0: unlimited)."""

    storage: str = Field(
        default="memory://",
        description="`limits` storage URI of the rate limits; a shared one (`redis://host:6379`, needs "
        "`pip install 'opentier[redis]'`) when several gateways run.",
    )
    per_api_key: str = Field(
        default="600 per minute",
        description="Requests allowed per API key, in `limits` notation (`60 per minute; 1000 per hour`); "
        "empty: no limit. Over it: 429 `rate_limited` with Retry-After.",
    )
    per_user: str = Field(
        default="600 per minute", description="Requests allowed per user (any credential of theirs)."
    )
    per_address: str = Field(
        default="1200 per minute",
        description="Requests allowed per client address, signed in or not (behind "
        "auth.trusted_proxies, the address the proxies saw).",
    )
    tenant_tokens_per_day: int = Field(
        default=0, ge=0, description="Tokens (input + output) a tenant may spend per UTC day; 0: unlimited."
    )
    tenant_tokens_per_month: int = Field(
        default=0, ge=0, description="Tokens a tenant may spend per UTC calendar month; 0: unlimited."
    )
    user_tokens_per_day: int = Field(
        default=0, ge=0, description="Tokens a user may spend per UTC day; 0: unlimited."
    )
    user_tokens_per_month: int = Field(
        default=0, ge=0, description="Tokens a user may spend per UTC calendar month; 0: unlimited."
    )
    overrides_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a gateway keeps the per-tenant and per-user limits set by admins "
        "(docs/admin.md) before reading them again; a change made through this gateway applies at once.",
    )

    @model_validator(mode="after")
    def _limits_parse(self) -> LimitsSettings:
        from limits import parse_many

        for key in RATE_LIMIT_KEYS:
            value = getattr(self, key).strip()
            if not value:
                continue
            try:
                parse_many(value)
            except ValueError as err:
                raise ValueError(f"limits.{key}: {err} (e.g. `60 per minute; 1000 per hour`)") from None
        return self


class ModelPrice(Section):
    """What one model's tokens cost, per million tokens, in ``usage.currency``."""

    input_per_million: Decimal = Field(ge=0, description="Price of a million input (prompt) tokens.")
    output_per_million: Decimal = Field(ge=0, description="Price of a million output (answer) tokens.")


class UsageSettings(Section):
    """Usage and cost reports (docs/usage-reports.md): the price of each model's tokens."""

    currency: str = Field(
        default="USD", min_length=1, max_length=16, description="Currency of `prices`, shown in reports."
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="Price per model, keyed by the `model` a turn recorded (else by its `llm` name): "
        "[usage.prices.<name>] with `input_per_million` and `output_per_million`. A model without a "
        "price has no cost in reports (null).",
    )


#: The request rate limits of :class:`LimitsSettings`, each in ``limits`` notation.
RATE_LIMIT_KEYS = ("per_api_key", "per_user", "per_address")


class AuthSettings(Section):
    """Gateway identity: sign-up, token lifetimes, login throttling, passwords and API keys."""

    signup: Literal["closed", "open"] = Field(
        default="closed",
        description="`closed`: only an admin creates users. `open`: anyone may sign up, as a member, "
        "into one of `signup_tenants`.",
    )
    signup_tenants: list[str] = Field(
        default_factory=lambda: ["default"],
        description="Tenants (by name) that open sign-up may join; created on the first sign-up.",
    )
    default_tenant: str = Field(
        default="default", description="Tenant a login or sign-up names when it names none."
    )
    operator_tenant: str = Field(
        default="",
        description="Tenant whose admins operate the platform: create, suspend and delete tenants and "
        "set their limits (docs/admin.md). Empty: `default_tenant`.",
    )

    @property
    def operator_tenant_name(self) -> str:
        """The operator tenant's name (``operator_tenant``, else ``default_tenant``)."""
        return self.operator_tenant or self.default_tenant

    issuer: str = Field(default="opentier", description="`iss` claim of access tokens, checked on each use.")
    audience: str = Field(
        default="opentier-api", description="`aud` claim of access tokens, checked on each use."
    )
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = Field(
        default="HS256",
        description="Signature algorithm of access tokens; tokens signed otherwise (`none` included) are "
        "refused.",
    )
    access_token_ttl_seconds: int = Field(
        default=900,
        ge=30,
        le=86400,
        description="Lifetime of an access token (short: it is not revocable "
        "one by one, only with its session).",
    )
    refresh_token_ttl_seconds: int = Field(
        default=30 * 86400,
        ge=60,
        description="Lifetime of a refresh token; each use replaces it with a fresh one.",
    )
    clock_skew_seconds: int = Field(
        default=30, ge=0, le=600, description="Leeway for `exp`/`nbf`/`iat` between gateway clocks."
    )
    login_limit_per_account: str = Field(
        default="10 per 15 minutes",
        description="Failed sign-ins allowed per account (tenant + email), in `limits` notation "
        "(`5 per minute; 20 per hour`); then 429 with Retry-After.",
    )
    login_limit_per_address: str = Field(
        default="50 per 15 minutes",
        description="Failed sign-ins allowed per client address, in `limits` notation.",
    )
    throttle_storage: str = Field(
        default="memory://",
        description="`limits` storage URI of the login throttle; use a shared one (`redis://...`) when "
        "several gateways run.",
    )
    trusted_proxies: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Reverse proxies in front of the gateway whose X-Forwarded-For entries are trusted "
        "for the client address; 0 uses the connection's address.",
    )
    password_min_length: int = Field(default=12, ge=8, le=128, description="Shortest password accepted.")
    password_max_length: int = Field(
        default=1024, ge=64, le=65536, description="Longest password accepted (bounds hashing work)."
    )
    argon2_time_cost: int = Field(default=3, ge=1, le=20, description="argon2id iterations.")
    argon2_memory_kib: int = Field(
        default=65536, ge=1024, le=4 * 1024 * 1024, description="argon2id memory per hash, in KiB."
    )
    argon2_parallelism: int = Field(default=4, ge=1, le=64, description="argon2id lanes.")
    api_key_default_ttl_days: int | None = Field(
        default=365,
        ge=1,
        description="Expiry of an API key created without one, in days; none = never expires.",
    )
    api_key_max_ttl_days: int | None = Field(
        default=None, ge=1, description="Longest expiry a new API key may ask for, in days; none = no bound."
    )
    api_key_touch_seconds: int = Field(
        default=60,
        ge=0,
        description="An API key's last-used time is written at most this often (not on every request).",
    )

    @model_validator(mode="after")
    def _limits_parse(self) -> AuthSettings:
        from limits import parse_many

        for key in ("login_limit_per_account", "login_limit_per_address"):
            try:
                parse_many(getattr(self, key))
            except ValueError as err:
                raise ValueError(f"auth.{key}: {err}") from None
        if self.password_min_length > self.password_max_length:
            raise ValueError("auth.password_min_length must not exceed auth.password_max_length")
        return self


class MailSettings(Section):
    """Gateway e-mail (invitations, address verification, password reset, notices): how mails leave,
    what their links point at, how long links live, how sends retry."""

    mode: Literal["log", "smtp"] = Field(
        default="log",
        description="`log`: mails are written to the gateway log, not sent (development). `smtp`: sent "
        "through `host`.",
    )
    host: str = Field(default="localhost", description="SMTP server.")
    port: int = Field(default=587, ge=1, le=65535, description="SMTP port (587 STARTTLS, 465 TLS, 25).")
    starttls: bool = Field(default=True, description="Upgrade the connection with STARTTLS (port 587).")
    tls: bool = Field(default=False, description="Implicit TLS from the first byte (port 465).")
    username: str = Field(default="", description="SMTP login; empty: no authentication.")
    password: SecretStr | None = Field(default=None, description="SMTP password (environment only).")
    sender: str = Field(default="OpenTier <no-reply@localhost>", description="`From` address of every mail.")
    public_url: str = Field(
        default="http://localhost:8080",
        description="Base URL of the web front end that links in mails point at (`<public_url>/reset?...`).",
    )
    templates_dir: Path | None = Field(
        default=None,
        description="Folder whose `<name>.txt` / `<name>.html` replace the built-in templates of the same "
        "name.",
    )
    reset_token_ttl_seconds: int = Field(
        default=1800, ge=60, le=86400, description="Lifetime of a password reset link (single use)."
    )
    invitation_ttl_seconds: int = Field(
        default=7 * 24 * 3600, ge=300, description="How long an invitation link stays valid."
    )
    verification_ttl_seconds: int = Field(
        default=2 * 24 * 3600, ge=300, description="How long an address verification link stays valid."
    )
    notices: bool = Field(
        default=True,
        description="Mail users a notice when an API key is created for them and when they (or their "
        "tenant) use up a token quota.",
    )
    reset_resend_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description="A new reset link for the same account is mailed at most this often (others are "
        "answered alike but send nothing).",
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="Timeout of each SMTP operation.")
    send_attempts: int = Field(default=5, ge=1, le=20, description="Attempts per mail before it is dropped.")
    backoff_seconds: float = Field(
        default=2.0, ge=0, description="Wait before the second attempt; doubled after each failure."
    )
    backoff_max_seconds: float = Field(default=300.0, ge=0, description="Longest wait between attempts.")

    @model_validator(mode="after")
    def _one_tls(self) -> MailSettings:
        if self.tls and self.starttls:
            raise ValueError("mail: choose `tls` (implicit, port 465) or `starttls`, not both")
        return self


class PluginSettings(Section):
    load: list[str] | None = Field(
        default=None,
        description="Allow-list of entry-point names to load; OPENTIER_LOAD_PLUGINS (comma "
        "separated) overrides it. None loads every installed plugin.",
    )
    disable_autoload: bool = Field(
        default=False,
        description="Load no installed plugin at all; OPENTIER_DISABLE_PLUGIN_AUTOLOAD=1 does the same.",
    )
    trace: bool = Field(
        default=False,
        description="Log every hook call (debugging plugins); OPENTIER_TRACE_PLUGINS=1 does the same.",
    )
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-plugin options, keyed by entry-point name: [plugins.options.<name>].",
    )


class IngestionSettings(Section):
    loaders: list[str] = Field(
        default_factory=list, description="Loader names to use; empty = every registered loader."
    )
    cleaners: list[str] = Field(
        default_factory=lambda: ["mojibake", "unicode", "whitespace", "headers-footers", "dehyphenate"],
        description="Ordered cleaner chain, by component name.",
    )
    embedder: str = Field(default="minilm", description="Embedder component name.")
    chunk_tokens: int = Field(
        default=256, ge=16, le=8192, description="Largest chunk, in the embedder's own tokens."
    )
    chunk_overlap_tokens: int = Field(
        default=32, ge=0, le=1024, description="Tokens repeated between neighbouring chunks."
    )
    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1, description="Largest upload accepted, in bytes."
    )
    workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Ingestion workers per host (each holds one transaction). 0: one more than the CPU "
        "cores, so that the embedder keeps every core busy while a worker stores its batch.",
    )
    batch_items: int = Field(
        default=128,
        ge=1,
        le=1000,
        description="Items a worker claims at once; their chunks are embedded together.",
    )
    roots: list[Path] = Field(
        default_factory=list,
        description="Folders on the host that `path` sources may read (with their sub-folders); "
        "empty refuses every path source.",
    )
    allow_private_urls: bool = Field(
        default=False,
        description="Let URL sources reach loopback, private and link-local addresses.",
    )
    url_max_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1, description="Largest body a URL source may return."
    )
    url_timeout_seconds: float = Field(default=30.0, gt=0, description="Time limit of one URL fetch.")
    stream_stale_seconds: float = Field(
        default=60,
        ge=1,
        le=86400,
        description="A streaming job whose stream showed no sign of life for this long (the host "
        "that held it died) is cancelled by any host; the records already ingested stay.",
    )
    near_duplicates: Literal["off", "report", "skip"] = Field(
        default="report",
        description="Near-duplicate documents within a collection: not checked, reported in the "
        "document's metadata, or skipped (status dropped).",
    )

    def worker_count(self) -> int:
        """``workers``, or one more than the cores this process may use when it is 0."""
        return self.workers or available_cores() + 1

    @model_validator(mode="after")
    def _overlap_below_size(self) -> IngestionSettings:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                f"ingestion.chunk_overlap_tokens ({self.chunk_overlap_tokens}) must be smaller than "
                f"ingestion.chunk_tokens ({self.chunk_tokens})"
            )
        return self


class RetrievalSettings(Section):
    retriever: str = Field(
        default="hybrid", description="Default retriever component name (a request may name another)."
    )
    top_k: int = Field(default=8, ge=1, le=1000, description="Chunks returned when a request does not say.")
    max_top_k: int = Field(
        default=200,
        ge=1,
        le=1000,
        description="Most chunks one search returns; a larger request is clamped to it.",
    )
    reranker: str | None = Field(
        default=None,
        description="Reranker component applied to every search (e.g. `diversify`); none by default. "
        "A request may name one.",
    )
    rerank_candidates: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Candidates the retriever returns for the reranker to reorder (at least top_k).",
    )
    rrf_k: int = Field(
        default=60, ge=1, description="The k of reciprocal rank fusion: score = weight / (k + rank)."
    )
    hybrid_weights: dict[str, float] = Field(
        default_factory=lambda: {"vector": 1.0, "fulltext": 1.0},
        description="Retrievers the `hybrid` retriever fuses, with the weight of each.",
    )
    hybrid_depth: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Candidates each part of `hybrid` returns before fusion (at least top_k).",
    )
    ef_search: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="pgvector hnsw.ef_search: higher finds more, slower (raised to k when smaller).",
    )
    iterative_scan: Literal["off", "relaxed_order", "strict_order"] = Field(
        default="relaxed_order",
        description="pgvector hnsw.iterative_scan: keep scanning the index until k chunks pass the "
        "tenant, collection and metadata conditions (`off` may return fewer under a selective filter).",
    )
    max_scan_tuples: int = Field(
        default=20000,
        ge=1,
        description="pgvector hnsw.max_scan_tuples: most index tuples one iterative scan visits.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RetrievalSettings:
        if self.top_k > self.max_top_k:
            raise ValueError(
                f"retrieval.top_k ({self.top_k}) must not exceed retrieval.max_top_k ({self.max_top_k})"
            )
        for name, weight in self.hybrid_weights.items():
            if not weight >= 0:
                raise ValueError(f"retrieval.hybrid_weights.{name} must be 0 or more, not {weight}")
        if not any(self.hybrid_weights.values()):
            raise ValueError("retrieval.hybrid_weights needs at least one retriever with a weight above 0")
        return self


class ChatSettings(Section):
    """Chat orchestration: the model, the prompt and its budget, citations, rewriting and time limits.

    Templates are Python format strings; their placeholders are listed in each description and checked
    at start-up, so a typo stops the host instead of failing the first chat.
    """

    llm: str = Field(default="extractive", description="LLM component name used when a request names none.")
    allowed_llms: list[str] = Field(
        default_factory=list,
        description="Other LLM names a chat request may choose; `*` allows every installed LLM; empty "
        "refuses any request naming an LLM other than `llm`.",
    )
    max_output_tokens: int = Field(
        default=1024, ge=1, description="Longest answer, in tokens; a request may ask for fewer, not more."
    )
    temperature: float = Field(
        default=0.0, ge=0.0, le=2.0, description="Sampling temperature when a request gives none."
    )
    max_message_chars: int = Field(
        default=16000, ge=1, description="Longest user message accepted, in characters."
    )
    history_messages: int = Field(
        default=10,
        ge=0,
        le=200,
        description="Earlier messages of the conversation put in the prompt (a request may say otherwise).",
    )
    history_max_share: float = Field(
        default=0.4,
        ge=0.0,
        le=1.0,
        description="Most of the prompt budget (context window minus system prompt, question and "
        "answer) the history may take; the oldest messages go first, the sources get the rest.",
    )
    system_prompt: str | None = Field(
        default=None, description="Replaces the built-in system prompt (docs/chat.md shows it)."
    )
    source_template: str = Field(
        default="[{number}] {label}\n{text}",
        description="How each numbered source is written into the prompt. Placeholders: {number}, "
        "{label} (title, section and page), {title}, {source}, {page}, {section}, {text}.",
    )
    question_template: str = Field(
        default="Sources:\n\n{sources}\n\nAnswer from the sources above and cite them by number, "
        "like [1].\n\nQuestion: {question}",
        description="The last user message of the prompt when sources were found. Placeholders: "
        "{sources}, {question}.",
    )
    no_sources_template: str = Field(
        default="No source in the searched documents covers this question. Say so first; then answer "
        "only what you are sure of, and cite nothing.\n\nQuestion: {question}",
        description="The last user message when retrieval found nothing relevant and `no_sources` is "
        "`answer`. Placeholder: {question}.",
    )
    rewrite: Literal["off", "terms", "llm"] = Field(
        default="terms",
        description="How a follow-up becomes the retrieval query: `off` (the message as is), `terms` "
        "(the message plus the key terms of the previous question; no model) or `llm` (the chat model "
        "rewrites it; one more call).",
    )
    rewrite_prompt: str = Field(
        default="Rewrite the last question as one standalone search query that names what it refers "
        "to. Reply with the query only.\n\nConversation:\n{history}\n\nLast question: {question}",
        description="Prompt of the `llm` rewrite. Placeholders: {history}, {question}.",
    )
    rewrite_terms: int = Field(
        default=6, ge=1, le=50, description="Key terms of the previous question added by the `terms` rewrite."
    )
    citation_mode: Literal["drop", "flag"] = Field(
        default="drop",
        description="A citation marker naming a source that was not given to the model is never a "
        "citation: `drop` removes it from the text, `flag` rewrites it with `citation_flag_format`.",
    )
    citation_flag_format: str = Field(
        default="{number}?",
        description="How `flag` writes a number that names no source, inside its brackets: [7] → [7?]. "
        "Placeholder: {number}.",
    )
    min_scores: dict[str, float] = Field(
        default_factory=dict,
        description="Least retrieval score a hit needs to be given to the model, by retriever name, on "
        "that retriever's own scale (e.g. {vector = 0.25}, cosine similarity); a retriever not listed "
        "keeps every hit (`hybrid` scores are ranks, not relevance).",
    )
    no_sources: Literal["refuse", "answer"] = Field(
        default="refuse",
        description="When retrieval ran and no hit passed `min_scores`: `refuse` answers "
        "`no_sources_answer` without calling the model; `answer` lets the model answer, told that no "
        "source covers the question.",
    )
    no_sources_answer: str = Field(
        default="The documents I searched do not cover this question, so I cannot answer it from them.",
        description="The answer given when `no_sources` is `refuse` and nothing relevant was found.",
    )
    deadline_seconds: float = Field(
        default=120.0, gt=0, description="Longest a chat turn may take, retrieval and answer together."
    )
    checkpoint_seconds: float = Field(
        default=2.0,
        ge=0,
        description="While an answer streams, the text so far is written to the database this often, "
        "so a host that dies mid-answer leaves it behind (0: only when the answer ends).",
    )
    stall_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A model that sends nothing for this long (first token included) ends the turn "
        "with the error llm_timeout.",
    )
    close_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest wait for a model's stream to close after a cancel or an error.",
    )
    max_concurrent_turns: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="Chat turns the host runs at once, from storing the question to storing the answer; "
        "more wait in arrival order, each at most until its deadline (then `host_busy`, retryable). 0: "
        "8 per CPU. Raise it for a remote LLM, whose turns mostly wait on the provider.",
    )
    max_queued_turns: int = Field(
        default=10_000,
        ge=0,
        description="Chat turns that may wait for a place at once; one more is refused at once with "
        "`host_busy` (HTTP 503 with Retry-After through the gateway).",
    )
    title_chars: int = Field(
        default=80, ge=8, le=500, description="A new conversation is titled with its first message, cut here."
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, description="Key for the Claude LLM plugin (environment only)."
    )
    openai_api_key: SecretStr | None = Field(
        default=None, description="Key for an OpenAI-compatible LLM server (environment only)."
    )

    @model_validator(mode="after")
    def _templates_have_known_placeholders(self) -> ChatSettings:
        sample = {
            "number": 1,
            "label": "",
            "title": "",
            "source": "",
            "page": "",
            "section": "",
            "text": "",
            "sources": "",
            "question": "",
            "history": "",
        }
        templates = {
            "source_template": self.source_template,
            "question_template": self.question_template,
            "no_sources_template": self.no_sources_template,
            "rewrite_prompt": self.rewrite_prompt,
            "citation_flag_format": self.citation_flag_format,
        }
        for key, template in templates.items():
            try:
                template.format(**sample)
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(f"chat.{key} has an unknown or malformed placeholder: {err}") from None
        if "{question}" not in self.question_template:
            raise ValueError("chat.question_template must contain {question}")
        return self


class Settings(BaseSettings):
    """The effective configuration of one OpenTier installation."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    environment: Literal["development", "production"] = Field(
        default="development",
        description="`production` refuses missing or placeholder secrets.",
    )
    data_dir: Path = Field(
        default=Path(".opentier"),
        description="Folder for local state: embedded database, host token, logs.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least severe log level printed."
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    host: HostSettings = Field(default_factory=HostSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    streaming: StreamingSettings = Field(default_factory=StreamingSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    ingestion: IngestionSettings = Field(default_factory=IngestionSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: the environment overrides the file, which arrives as init kwargs.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment != "production":
            return self
        required = {"host.token": self.host.token, "gateway.jwt_secret": self.gateway.jwt_secret}
        for key, value in required.items():
            if value is None or value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(
                    f"{key} must be set to a real secret in production (environment variable {env_name(key)})"
                )
        return self

    @property
    def embedded_dir(self) -> Path:
        """The embedded PostgreSQL data folder, absolute."""
        base = self.database.embedded_dir or (self.data_dir / "postgres")
        return base.expanduser().resolve()


def env_name(key: str) -> str:
    """The environment variable for a dotted config key: ``host.token`` → ``OPENTIER_HOST__TOKEN``."""
    return ENV_PREFIX + "__".join(part.upper() for part in key.split("."))


def find_config_file(explicit: Path | str | None = None) -> Path | None:
    """The config file in force: ``explicit``, then ``$OPENTIER_CONFIG``, then ``./opentier.toml``."""
    if explicit is not None:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None


def load_settings(config_file: Path | str | None = None) -> Settings:
    """Read and validate the configuration; raise :class:`ConfigError` naming the bad key."""
    path = find_config_file(config_file)
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_toml(path)
        _refuse_secrets_in_file(data, Settings, prefix="", path=path)
    try:
        return Settings(**data)
    except ValidationError as err:
        raise ConfigError(_describe_validation_error(err, path)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; tests call ``get_settings.cache_clear()``."""
    return load_settings()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None


def _refuse_secrets_in_file(data: dict[str, Any], model: type[BaseModel], prefix: str, path: Path) -> None:
    for name, value in data.items():
        field = model.model_fields.get(name)
        if field is None:
            continue  # validation reports unknown keys with the allowed ones
        key = f"{prefix}{name}"
        annotation = field.annotation
        if annotation is not None and "SecretStr" in repr(annotation):
            raise ConfigError(
                f"{path}: {key} is a secret and is read from the environment only; remove it from "
                f"the file and set {env_name(key)} instead"
            )
        if isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _refuse_secrets_in_file(value, annotation, prefix=f"{key}.", path=path)


def _describe_validation_error(err: ValidationError, path: Path | None) -> str:
    source = f" (file {path}, or environment)" if path else " (environment)"
    lines = [f"invalid configuration{source}:"]
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        given = problem.get("input")
        if problem["type"] == "extra_forbidden":
            allowed = _allowed_keys(problem["loc"][:-1])
            lines.append(f"  {key}: unknown key; allowed here: {', '.join(allowed)}")
            continue
        shown = "***" if isinstance(given, SecretStr) or "secret" in key or "token" in key else given
        lines.append(f"  {key} = {shown!r}: {problem['msg']}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)

"""Settings: one ``opentier.toml`` plus ``OPENTIER_*`` environment variables.

The file is found through ``--config``, then ``OPENTIER_CONFIG``, then ``./opentier.toml`` if it exists.
Environment variables win over the file; ``__`` separates nesting (``OPENTIER_DATABASE__URL``).
Secrets (``SecretStr`` fields) are read from the environment only: a secret written in the file stops
start-up with a message saying which variable to use instead.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from opentier.errors import ConfigError

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
        default=2, ge=1, le=64, description="Ingestion workers per host (each holds one transaction)."
    )
    batch_items: int = Field(
        default=64,
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

    @model_validator(mode="after")
    def _overlap_below_size(self) -> IngestionSettings:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                f"ingestion.chunk_overlap_tokens ({self.chunk_overlap_tokens}) must be smaller than "
                f"ingestion.chunk_tokens ({self.chunk_tokens})"
            )
        return self


class RetrievalSettings(Section):
    retriever: str = Field(default="hybrid", description="Default retriever component name.")
    top_k: int = Field(default=8, ge=1, le=1000, description="Chunks returned by default.")
    rrf_k: int = Field(default=60, ge=1, description="The k of reciprocal rank fusion.")
    ef_search: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="pgvector hnsw.ef_search: higher finds more, slower.",
    )


class ChatSettings(Section):
    llm: str = Field(default="local", description="LLM component name.")
    max_output_tokens: int = Field(default=1024, ge=1, description="Longest answer, in tokens.")
    system_prompt: str | None = Field(default=None, description="Replaces the built-in system prompt.")
    anthropic_api_key: SecretStr | None = Field(
        default=None, description="Key for the Claude LLM plugin (environment only)."
    )
    openai_api_key: SecretStr | None = Field(
        default=None, description="Key for an OpenAI-compatible LLM server (environment only)."
    )


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

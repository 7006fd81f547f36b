"""Tables of schema ``gateway``: identity and policy, written only by the gateway.

Secrets are never stored: passwords as argon2 hashes, refresh tokens and API keys as SHA-256 digests
of high-entropy random values. Audit rows keep plain ids (no foreign keys) so that deleting a user
leaves the record of what it did.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from opentier.db.models import NAMING_CONVENTION

SCHEMA = "gateway"


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    #: A deletion in progress: refused like a suspended tenant; deleting again resumes it.
    DELETING = "deleting"


class UserRole(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


def _one_of(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


class GatewayBase(DeclarativeBase):
    """Declarative base of the gateway side; its metadata holds schema ``gateway`` only."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads it once)
        str: sa.Text(),
        datetime: sa.DateTime(timezone=True),
        uuid.UUID: sa.Uuid(),
    }


class Tenant(GatewayBase):
    """An organisation whose users, keys, quotas and data are kept apart from every other one."""

    __tablename__ = "tenants"
    __table_args__ = (
        sa.CheckConstraint(_one_of("status", TenantStatus), name="status"),
        {"schema": SCHEMA},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    name: Mapped[str] = mapped_column(unique=True)
    status: Mapped[str] = mapped_column(server_default=TenantStatus.ACTIVE.value)
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())


class User(GatewayBase):
    """A person who signs in to one tenant; the email is unique per tenant, whatever its case."""

    __tablename__ = "users"
    __table_args__ = (
        sa.CheckConstraint(_one_of("role", UserRole), name="role"),
        sa.Index("uq_users_tenant_id_email", "tenant_id", sa.text("lower(email)"), unique=True),
        {"schema": SCHEMA},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"))
    email: Mapped[str]
    display_name: Mapped[str] = mapped_column(server_default="")
    role: Mapped[str] = mapped_column(server_default=UserRole.MEMBER.value)
    password_hash: Mapped[str | None]
    disabled: Mapped[bool] = mapped_column(server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    last_login_at: Mapped[datetime | None]
    #: When the user proved the address (a verification link or an accepted invitation); None: not yet.
    email_verified_at: Mapped[datetime | None]


class AuthSession(GatewayBase):
    """One sign-in: the family of refresh tokens rotated from it, and the access tokens it issued."""

    __tablename__ = "auth_sessions"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None]


class RefreshToken(GatewayBase):
    """A refresh token, by its digest; each use replaces it with a new one of the same family."""

    __tablename__ = "refresh_tokens"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    session_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey(f"{SCHEMA}.auth_sessions.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    replaced_by: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey(f"{SCHEMA}.refresh_tokens.id", ondelete="SET NULL")
    )


class ApiKey(GatewayBase):
    """An API key of a user: the prefix shown to people, the digest of the whole key, its scopes."""

    __tablename__ = "api_keys"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str]
    prefix: Mapped[str] = mapped_column(unique=True)
    key_hash: Mapped[str]
    scopes: Mapped[list[str]] = mapped_column(ARRAY(sa.Text()))
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class LoginAttempt(GatewayBase):
    """Every sign-in attempt, good or bad: the durable trace behind the in-memory throttle."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        sa.Index("ix_login_attempts_email_at", sa.text("lower(email)"), "at"),
        sa.Index("ix_login_attempts_address_at", "address", "at"),
        {"schema": SCHEMA},
    )

    id: Mapped[int] = mapped_column(sa.BigInteger(), sa.Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    tenant_name: Mapped[str]
    email: Mapped[str]
    address: Mapped[str | None]
    succeeded: Mapped[bool]
    reason: Mapped[str | None]


class AuditEvent(GatewayBase):
    """Who did what to what, from where, in which request: one row per security-relevant event."""

    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_tenant_id_at", "tenant_id", "at"),
        sa.Index("ix_audit_log_tenant_id_actor_user_id_at", "tenant_id", "actor_user_id", "at"),
        sa.Index("ix_audit_log_tenant_id_action_at", "tenant_id", "action", "at"),
        {"schema": SCHEMA},
    )

    id: Mapped[int] = mapped_column(sa.BigInteger(), sa.Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    tenant_id: Mapped[uuid.UUID | None]
    actor_user_id: Mapped[uuid.UUID | None]
    actor_api_key_id: Mapped[uuid.UUID | None]
    action: Mapped[str]
    target: Mapped[str | None]
    address: Mapped[str | None]
    request_id: Mapped[str | None]
    details: Mapped[dict[str, Any]] = mapped_column(JSONB(), server_default=sa.text("'{}'::jsonb"))


class TokenUsage(GatewayBase):
    """The tokens of one chat turn, charged to its tenant, user and API key: the ledger behind token
    quotas and usage reports. Plain ids (no foreign keys): usage outlives the user or key behind it.
    Both indexes carry the token counts, so a period's sum is read from the index alone."""

    __tablename__ = "token_usage"
    __table_args__ = (
        sa.CheckConstraint("input_tokens >= 0 AND output_tokens >= 0", name="tokens"),
        sa.Index(
            "ix_token_usage_tenant_id_created_at",
            "tenant_id",
            "created_at",
            postgresql_include=["input_tokens", "output_tokens"],
        ),
        sa.Index(
            "ix_token_usage_tenant_id_user_id_created_at",
            "tenant_id",
            "user_id",
            "created_at",
            postgresql_include=["input_tokens", "output_tokens"],
        ),
        {"schema": SCHEMA},
    )

    id: Mapped[int] = mapped_column(sa.BigInteger(), sa.Identity(), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    tenant_id: Mapped[uuid.UUID]
    user_id: Mapped[uuid.UUID]
    api_key_id: Mapped[uuid.UUID | None]
    conversation_id: Mapped[str | None]
    message_id: Mapped[str | None]
    llm: Mapped[str] = mapped_column(server_default="")
    model: Mapped[str] = mapped_column(server_default="")
    input_tokens: Mapped[int] = mapped_column(sa.BigInteger())
    output_tokens: Mapped[int] = mapped_column(sa.BigInteger())
    estimated: Mapped[bool] = mapped_column(server_default=sa.false())


class MailToken(GatewayBase):
    """A single-use token sent in a mail link (``purpose``: ``password_reset``, ``invitation``,
    ``email_verification``), by its digest; ``used_at`` set when it is spent."""

    __tablename__ = "mail_tokens"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str]
    token_hash: Mapped[str] = mapped_column(unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class LimitOverride(GatewayBase):
    """Rate limit and token quotas of one tenant (``user_id`` NULL) or one user, replacing the
    ``[limits]`` defaults for it; a NULL field keeps the default, 0 tokens means unlimited."""

    __tablename__ = "limit_overrides"
    __table_args__ = (
        sa.CheckConstraint(
            "(tokens_per_day IS NULL OR tokens_per_day >= 0) "
            "AND (tokens_per_month IS NULL OR tokens_per_month >= 0)",
            name="tokens",
        ),
        sa.Index(
            "uq_limit_overrides_tenant_id_user_id",
            "tenant_id",
            "user_id",
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
        {"schema": SCHEMA},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"))
    #: Requests allowed, in ``limits`` notation (``"60 per minute"``); NULL: the configured default.
    requests: Mapped[str | None]
    tokens_per_day: Mapped[int | None] = mapped_column(sa.BigInteger())
    tokens_per_month: Mapped[int | None] = mapped_column(sa.BigInteger())
    updated_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())


class NoticeSent(GatewayBase):
    """A notice mailed once per ``(kind, subject, period)``, e.g. ``("quota_exhausted",
    "user:<id>:day", "2026-11-27")``: inserting the row first decides which gateway sends it."""

    __tablename__ = "notices_sent"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    kind: Mapped[str] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"))
    sent_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())

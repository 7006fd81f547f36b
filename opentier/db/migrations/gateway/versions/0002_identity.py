"""Schema gateway: identity — tenant status, users, sessions, refresh tokens, API keys, logins, audit.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"
NOW = sa.text("now()")
UUID_DEFAULT = sa.text("gen_random_uuid()")


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _id() -> sa.Column[object]:
    return sa.Column("id", sa.Uuid(), server_default=UUID_DEFAULT, nullable=False)


def upgrade() -> None:
    op.add_column(
        "tenants", sa.Column("status", sa.Text(), server_default="active", nullable=False), schema=SCHEMA
    )
    op.create_check_constraint(
        "ck_tenants_status", "tenants", "status IN ('active', 'suspended')", schema=SCHEMA
    )

    op.create_table(
        "users",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), server_default="", nullable=False),
        sa.Column("role", sa.Text(), server_default="member", nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", _tz(), server_default=NOW, nullable=False),
        sa.Column("updated_at", _tz(), server_default=NOW, nullable=False),
        sa.Column("last_login_at", _tz(), nullable=True),
        sa.CheckConstraint("role IN ('admin', 'member')", name="ck_users_role"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], [f"{SCHEMA}.tenants.id"], ondelete="CASCADE", name="fk_users_tenant_id_tenants"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        schema=SCHEMA,
    )
    op.create_index(
        "uq_users_tenant_id_email",
        "users",
        ["tenant_id", sa.text("lower(email)")],
        unique=True,
        schema=SCHEMA,
    )

    op.create_table(
        "auth_sessions",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", _tz(), server_default=NOW, nullable=False),
        sa.Column("revoked_at", _tz(), nullable=True),
        sa.Column("revoked_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            [f"{SCHEMA}.tenants.id"],
            ondelete="CASCADE",
            name="fk_auth_sessions_tenant_id_tenants",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], [f"{SCHEMA}.users.id"], ondelete="CASCADE", name="fk_auth_sessions_user_id_users"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_auth_sessions"),
        schema=SCHEMA,
    )
    op.create_index("ix_auth_sessions_user_id", "auth_sessions", ["user_id"], schema=SCHEMA)

    op.create_table(
        "refresh_tokens",
        _id(),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("created_at", _tz(), server_default=NOW, nullable=False),
        sa.Column("expires_at", _tz(), nullable=False),
        sa.Column("revoked_at", _tz(), nullable=True),
        sa.Column("replaced_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            [f"{SCHEMA}.auth_sessions.id"],
            ondelete="CASCADE",
            name="fk_refresh_tokens_session_id_auth_sessions",
        ),
        sa.ForeignKeyConstraint(
            ["replaced_by"],
            [f"{SCHEMA}.refresh_tokens.id"],
            ondelete="SET NULL",
            name="fk_refresh_tokens_replaced_by_refresh_tokens",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_refresh_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_refresh_tokens_token_hash"),
        schema=SCHEMA,
    )
    op.create_index("ix_refresh_tokens_session_id", "refresh_tokens", ["session_id"], schema=SCHEMA)

    op.create_table(
        "api_keys",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("created_at", _tz(), server_default=NOW, nullable=False),
        sa.Column("last_used_at", _tz(), nullable=True),
        sa.Column("expires_at", _tz(), nullable=True),
        sa.Column("revoked_at", _tz(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], [f"{SCHEMA}.tenants.id"], ondelete="CASCADE", name="fk_api_keys_tenant_id_tenants"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], [f"{SCHEMA}.users.id"], ondelete="CASCADE", name="fk_api_keys_user_id_users"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
        schema=SCHEMA,
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"], schema=SCHEMA)

    op.create_table(
        "login_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("at", _tz(), server_default=NOW, nullable=False),
        sa.Column("tenant_name", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_login_attempts"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_login_attempts_email_at", "login_attempts", [sa.text("lower(email)"), "at"], schema=SCHEMA
    )
    op.create_index("ix_login_attempts_address_at", "login_attempts", ["address", "at"], schema=SCHEMA)

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("at", _tz(), server_default=NOW, nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=True),
        sa.Column("actor_user_id", sa.Uuid(), nullable=True),
        sa.Column("actor_api_key_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("details", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        schema=SCHEMA,
    )
    op.create_index("ix_audit_log_tenant_id_at", "audit_log", ["tenant_id", "at"], schema=SCHEMA)
    op.create_index(
        "ix_audit_log_tenant_id_actor_user_id_at",
        "audit_log",
        ["tenant_id", "actor_user_id", "at"],
        schema=SCHEMA,
    )
    op.create_index(
        "ix_audit_log_tenant_id_action_at", "audit_log", ["tenant_id", "action", "at"], schema=SCHEMA
    )


def downgrade() -> None:
    for table in ("audit_log", "login_attempts", "api_keys", "refresh_tokens", "auth_sessions", "users"):
        op.drop_table(table, schema=SCHEMA)
    op.drop_constraint("ck_tenants_status", "tenants", schema=SCHEMA, type_="check")
    op.drop_column("tenants", "status", schema=SCHEMA)

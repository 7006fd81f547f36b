"""Schema gateway: the token usage ledger (one row per chat turn) behind token quotas.

Revision ID: 0003
Revises: 0002
Create Date: 2026-01-12
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"
TOKENS = ["input_tokens", "output_tokens"]


def upgrade() -> None:
    op.create_table(
        "token_usage",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("conversation_id", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("llm", sa.Text(), server_default="", nullable=False),
        sa.Column("model", sa.Text(), server_default="", nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("estimated", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.CheckConstraint("input_tokens >= 0 AND output_tokens >= 0", name="ck_token_usage_tokens"),
        sa.PrimaryKeyConstraint("id", name="pk_token_usage"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_token_usage_tenant_id_created_at",
        "token_usage",
        ["tenant_id", "created_at"],
        postgresql_include=TOKENS,
        schema=SCHEMA,
    )
    op.create_index(
        "ix_token_usage_tenant_id_user_id_created_at",
        "token_usage",
        ["tenant_id", "user_id", "created_at"],
        postgresql_include=TOKENS,
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("token_usage", schema=SCHEMA)

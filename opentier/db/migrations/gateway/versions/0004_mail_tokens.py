"""Schema gateway: single-use tokens sent in mail links (password reset; later invitations, verification).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.create_table(
        "mail_tokens",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            [f"{SCHEMA}.tenants.id"],
            ondelete="CASCADE",
            name="fk_mail_tokens_tenant_id_tenants",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], [f"{SCHEMA}.users.id"], ondelete="CASCADE", name="fk_mail_tokens_user_id_users"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_mail_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_mail_tokens_token_hash"),
        schema=SCHEMA,
    )
    op.create_index("ix_mail_tokens_user_id", "mail_tokens", ["user_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("mail_tokens", schema=SCHEMA)

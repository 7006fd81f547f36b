"""Schema gateway: admin operations and mail flows.

- tenants.status may be ``deleting`` (a deletion in progress: refused like ``suspended``, resumable);
- users.email_verified_at (address verification and accepted invitations);
- limit_overrides: rate limits and token quotas per tenant (user_id NULL) or per user;
- notices_sent: each notice (quota exhausted, ...) mailed once per subject and period.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.drop_constraint("ck_tenants_status", "tenants", schema=SCHEMA, type_="check")
    op.create_check_constraint(
        "ck_tenants_status", "tenants", "status IN ('active', 'suspended', 'deleting')", schema=SCHEMA
    )
    op.add_column(
        "users", sa.Column("email_verified_at", sa.DateTime(timezone=True), nullable=True), schema=SCHEMA
    )
    op.create_table(
        "limit_overrides",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("requests", sa.Text(), nullable=True),
        sa.Column("tokens_per_day", sa.BigInteger(), nullable=True),
        sa.Column("tokens_per_month", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(tokens_per_day IS NULL OR tokens_per_day >= 0) "
            "AND (tokens_per_month IS NULL OR tokens_per_month >= 0)",
            name="ck_limit_overrides_tokens",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            [f"{SCHEMA}.tenants.id"],
            ondelete="CASCADE",
            name="fk_limit_overrides_tenant_id_tenants",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            [f"{SCHEMA}.users.id"],
            ondelete="CASCADE",
            name="fk_limit_overrides_user_id_users",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_limit_overrides"),
        schema=SCHEMA,
    )
    # One row per tenant (user_id NULL) and one per user: NULLS NOT DISTINCT (PostgreSQL 15+).
    op.execute(
        f"CREATE UNIQUE INDEX uq_limit_overrides_tenant_id_user_id ON {SCHEMA}.limit_overrides "
        "(tenant_id, user_id) NULLS NOT DISTINCT"
    )
    op.create_table(
        "notices_sent",
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            [f"{SCHEMA}.tenants.id"],
            ondelete="CASCADE",
            name="fk_notices_sent_tenant_id_tenants",
        ),
        sa.PrimaryKeyConstraint("kind", "subject", "period", name="pk_notices_sent"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("notices_sent", schema=SCHEMA)
    op.drop_table("limit_overrides", schema=SCHEMA)
    op.drop_column("users", "email_verified_at", schema=SCHEMA)
    op.execute(f"UPDATE {SCHEMA}.tenants SET status = 'suspended' WHERE status = 'deleting'")
    op.drop_constraint("ck_tenants_status", "tenants", schema=SCHEMA, type_="check")
    op.create_check_constraint(
        "ck_tenants_status", "tenants", "status IN ('active', 'suspended')", schema=SCHEMA
    )

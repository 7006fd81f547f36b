"""Schema intelligence: row-level security, so that a query that forgets its tenant filter leaks nothing.

Every table with ``tenant_id`` gets ``ENABLE`` and ``FORCE ROW LEVEL SECURITY`` (FORCE: a host that
connects as the tables' owner is bound too) and one policy ``tenant_isolation`` for every command: a
row is visible, and may be written, only when its ``tenant_id`` equals the transaction-local setting
``opentier.tenant_id``, or when that setting is ``'*'`` (the host's cross-tenant work). Unset, no row.
``fulltext_pending`` has no tenant (chunk ids that live inside one transaction) and stays open.

Superusers and BYPASSRLS roles are exempt from any policy, so a host connecting as one (the embedded
default, ``postgres``) switches each tenant transaction to the role ``opentier_tenant`` created here
(no login, no privilege but the data of this schema). Roles belong to the cluster, not the database:
the role is created once and kept by the downgrade. A migrating user who may not create roles (an
external PostgreSQL whose owner is a plain user) gets the policies without the role; such a host is
bound by FORCE and needs no role.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "intelligence"
ROLE = "opentier_tenant"
TABLES = (
    "collections",
    "documents",
    "chunks",
    "ingestion_jobs",
    "ingestion_items",
    "fulltext_terms",
    "fulltext_totals",
    "conversations",
    "messages",
)
_SCOPE = "current_setting('opentier.tenant_id', true)"
CONDITION = f"tenant_id = {_SCOPE} OR {_SCOPE} = '*'"

# Concurrent migrations of two databases of one cluster (tests) may both find the role missing.
CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}')
        AND (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
        BEGIN
            CREATE ROLE {ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        GRANT USAGE ON SCHEMA {SCHEMA} TO {ROLE};
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {SCHEMA} TO {ROLE};
        REVOKE INSERT, UPDATE, DELETE ON {SCHEMA}.alembic_version FROM {ROLE};
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {SCHEMA} TO {ROLE};
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {SCHEMA} TO {ROLE};
        ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA}
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ROLE};
        ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} GRANT USAGE, SELECT ON SEQUENCES
            TO {ROLE};
    END IF;
END
$$
"""

# Under a policy, a condition of the query may drive an index scan only when its function is LEAKPROOF
# (else it could see rows the policy hides, in an error message say). ``tsv @@ tsquery`` is not marked
# so, nor is fulltext_repeats (the other GIN index, migration 0005): full-text search would read every
# tenant's chunks instead. Neither throws an error that depends on the row. Marking them needs a
# superuser; the mark lives in this database (a dump and restore loses the built-in's).
LEAKPROOF_MATCH = f"""
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) LEAKPROOF;
        ALTER FUNCTION {SCHEMA}.fulltext_repeats(tsvector) LEAKPROOF;
    END IF;
END
$$
"""
NOT_LEAKPROOF_MATCH = LEAKPROOF_MATCH.replace(" LEAKPROOF;", " NOT LEAKPROOF;")

REVOKE_ROLE = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA}
            REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM {ROLE};
        ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} REVOKE USAGE, SELECT ON SEQUENCES
            FROM {ROLE};
        REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {SCHEMA} FROM {ROLE};
        REVOKE ALL ON ALL SEQUENCES IN SCHEMA {SCHEMA} FROM {ROLE};
        REVOKE ALL ON ALL TABLES IN SCHEMA {SCHEMA} FROM {ROLE};
        REVOKE USAGE ON SCHEMA {SCHEMA} FROM {ROLE};
    END IF;
END
$$
"""


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {SCHEMA}.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {SCHEMA}.{table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {SCHEMA}.{table} USING ({CONDITION}) WITH CHECK ({CONDITION})"
        )
    op.execute(CREATE_ROLE)
    op.execute(LEAKPROOF_MATCH)


def downgrade() -> None:
    op.execute(NOT_LEAKPROOF_MATCH)
    op.execute(REVOKE_ROLE)
    for table in TABLES:
        op.execute(f"DROP POLICY tenant_isolation ON {SCHEMA}.{table}")
        op.execute(f"ALTER TABLE {SCHEMA}.{table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {SCHEMA}.{table} DISABLE ROW LEVEL SECURITY")

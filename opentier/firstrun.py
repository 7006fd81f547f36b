"""The first admin of ``opentier up``: on a database whose default tenant has no admin yet, an admin user
and an API key for it, made in one transaction and returned so that they are shown once.

The email and password come from ``OPENTIER_ADMIN_EMAIL`` and ``OPENTIER_ADMIN_PASSWORD`` when set;
otherwise the email is :data:`DEFAULT_ADMIN_EMAIL` and the password is made up. Only the password's
argon2id hash and the key's SHA-256 digest are stored, as for any other user and key.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opentier.config import Settings
from opentier.db.engine import create_engine
from opentier.db.models.gateway import Tenant, User
from opentier.errors import ConfigError, InvalidRequestError
from opentier.gateway.identity import apikeys, audit
from opentier.gateway.identity.audit import Actor, Origin
from opentier.gateway.identity.passwords import Passwords
from opentier.gateway.identity.tenants import ensure_tenant
from opentier.gateway.identity.users import add_user, normalize_email
from opentier.gateway.principal import ROLE_SCOPES

ADMIN_EMAIL_ENV = "OPENTIER_ADMIN_EMAIL"
ADMIN_PASSWORD_ENV = "OPENTIER_ADMIN_PASSWORD"
DEFAULT_ADMIN_EMAIL = "admin@example.com"
#: Name of the API key made for the first admin (``GET /v1/keys`` shows it).
KEY_NAME = "opentier up"
#: Transaction-level advisory lock: two first runs at once make one admin.
LOCK_KEY = 0x0FE7_1E12
ORIGIN = Origin(address="opentier up")


@dataclass(frozen=True, slots=True)
class Admin:
    """The default tenant's admin; the secrets are set only when this run created it."""

    tenant: str
    tenant_id: str
    user_id: str
    email: str
    created: bool
    #: The password this run made up (None when it came from the environment, or nothing was created).
    password: str | None = None
    #: The new API key, shown once (None when nothing was created).
    api_key: str | None = None
    api_key_scopes: tuple[str, ...] = ()


def check_environment(settings: Settings, environ: Mapping[str, str]) -> None:
    """Refuse, before anything starts, an admin email or password from the environment that would be
    refused at the first run."""
    email = environ.get(ADMIN_EMAIL_ENV, "").strip()
    password = environ.get(ADMIN_PASSWORD_ENV, "")
    try:
        if email:
            normalize_email(email)
        if password:
            Passwords(settings.auth).check_policy(password)
    except InvalidRequestError as err:
        name = ADMIN_PASSWORD_ENV if err.message.startswith("password") else ADMIN_EMAIL_ENV
        raise ConfigError(f"{name}: {err.message}") from None


async def ensure_admin(settings: Settings, environ: Mapping[str, str]) -> Admin:
    """The default tenant's first enabled admin, created with an API key when there is none."""
    tenant_name = settings.auth.default_tenant
    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions() as session:
            found = await _existing(session, tenant_name)
        if found is not None:
            return found
        email = environ.get(ADMIN_EMAIL_ENV, "").strip() or DEFAULT_ADMIN_EMAIL
        given = environ.get(ADMIN_PASSWORD_ENV, "")
        password = given or secrets.token_urlsafe(18)
        try:
            password_hash = await Passwords(settings.auth).hash(password)
        except InvalidRequestError as err:
            raise ConfigError(f"{ADMIN_PASSWORD_ENV}: {err.message}") from None
        async with sessions() as session, session.begin():
            await session.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_KEY)))
            found = await _existing(session, tenant_name)
            if found is not None:
                return found
            return await _create(
                session,
                settings,
                tenant_name=tenant_name,
                email=email,
                password_hash=password_hash,
                password=password,
                given=given,
            )
    finally:
        await engine.dispose()


async def _existing(session: AsyncSession, tenant_name: str) -> Admin | None:
    row = (
        await session.execute(
            sa.select(User, Tenant)
            .join(Tenant, Tenant.id == User.tenant_id)
            .where(Tenant.name == tenant_name, User.role == "admin", User.disabled.is_(False))
            .order_by(User.created_at, User.id)
            .limit(1)
        )
    ).one_or_none()
    if row is None:
        return None
    user, tenant = row
    return Admin(tenant.name, str(tenant.id), str(user.id), user.email, created=False)


async def _create(
    session: AsyncSession,
    settings: Settings,
    *,
    tenant_name: str,
    email: str,
    password_hash: str,
    password: str,
    given: str,
) -> Admin:
    tenant = await ensure_tenant(session, tenant_name)
    actor = Actor(tenant_id=tenant.id)
    user = await add_user(
        session, tenant_id=tenant.id, email=email, password_hash=password_hash, display_name="", role="admin"
    )
    audit.record(
        session,
        audit.USER_CREATED,
        actor=actor,
        origin=ORIGIN,
        target=f"user:{user.id}",
        details={"role": "admin", "via": "opentier up"},
    )
    days = settings.auth.api_key_default_ttl_days
    key = await apikeys.create_key(
        session,
        owner=user,
        name=KEY_NAME,
        scopes=sorted(ROLE_SCOPES["admin"]),
        ttl=None if days is None else timedelta(days=days),
    )
    audit.record(
        session,
        audit.KEY_CREATED,
        actor=Actor(tenant_id=tenant.id, user_id=user.id),
        origin=ORIGIN,
        target=f"api_key:{key.row.id}",
        details={"owner": str(user.id), "name": key.row.name, "scopes": key.row.scopes},
    )
    return Admin(
        tenant.name,
        str(tenant.id),
        str(user.id),
        user.email,
        created=True,
        password=None if given else password,
        api_key=key.secret,
        api_key_scopes=tuple(key.row.scopes),
    )

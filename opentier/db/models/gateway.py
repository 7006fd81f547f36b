"""Tables of schema ``gateway``: identity and policy, written only by the gateway."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from opentier.db.models import NAMING_CONVENTION

SCHEMA = "gateway"


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
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=sa.func.gen_random_uuid())
    name: Mapped[str] = mapped_column(unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())

"""SQLAlchemy models, one module and one declarative base per side (schema).

:mod:`opentier.db.models.gateway` is for the gateway and :mod:`opentier.db.models.intelligence`
for the host; neither imports the other, so each side's code imports only its own tables.
"""

from __future__ import annotations

#: Constraint and index names, so that hand-written migrations and models name things alike.
NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}

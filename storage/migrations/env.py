"""Alembic environment of songhpo's result tables, run programmatically by :mod:`storage.db`.

There is no ``alembic.ini``: :func:`storage.db.ensure_schema` builds the Alembic config and hands over
an open connection (inside a transaction holding the schema lock) in ``config.attributes``. The
version table is ``songhpo_alembic_version`` so that Optuna's ``alembic_version`` is left alone, and
only ``songhpo_`` tables are considered.
"""

from __future__ import annotations

from alembic import context

from storage.models import VERSION_TABLE, Base


def _ours(name: str | None, type_: str, _parent: object) -> bool:
    return type_ != "table" or bool(name and name.startswith("songhpo_"))


connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("songhpo migrations run online through storage.db.ensure_schema(), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    include_name=_ours,
)
with context.begin_transaction():
    context.run_migrations()

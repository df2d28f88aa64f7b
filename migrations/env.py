"""Alembic environment for the promptreg registry database.

Two ways in:
- programmatic (promptreg.registry.migrate.alembic_config): the URL is the config's sqlalchemy.url;
- the ``alembic`` CLI with the repo's alembic.ini: the URL comes from ``-x url=...``, else from
  ``sqlalchemy.url`` in the ini (empty by default), else from the PROMPTREG_DB_URL environment variable.

Concurrent upgrades are serialised: on PostgreSQL by a transaction-scoped advisory lock taken before
Alembic reads the current revision, on SQLite by running the whole upgrade in one BEGIN IMMEDIATE
transaction (the engine from promptreg.registry.db begins every transaction that way).
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlmodel import SQLModel

from promptreg.errors import StoreUnavailableError
from promptreg.registry import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from promptreg.registry.db import make_engine

config = context.config

if config.config_file_name is not None and "promptreg_url" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata

#: Arbitrary 63-bit key of the PostgreSQL advisory lock that serialises migrations.
PG_MIGRATION_LOCK_KEY = 0x70726F6D7074  # "prompt"


def _url() -> str:
    url = (
        config.attributes.get("promptreg_url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("PROMPTREG_DB_URL")
    )
    if not url:
        raise StoreUnavailableError(
            "no registry database URL: set PROMPTREG_DB_URL or pass `alembic -x url=...`"
        )
    return url


def _configure_kwargs(dialect_name: str) -> dict:
    return {
        "target_metadata": target_metadata,
        "compare_type": True,
        # SQLite cannot ALTER most things: later migrations use batch mode there.
        "render_as_batch": dialect_name == "sqlite",
        # SQLite supports transactional DDL; run the whole upgrade in one transaction so that a
        # failure leaves nothing half done and concurrent first uses serialise on the write lock.
        "transactional_ddl": True,
    }


def run_migrations_offline() -> None:
    from sqlalchemy.engine import make_url

    url = _url()
    context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"},
                      **_configure_kwargs(make_url(url).get_backend_name()))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        context.configure(connection=connection, **_configure_kwargs(connection.dialect.name))
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK_KEY})")
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

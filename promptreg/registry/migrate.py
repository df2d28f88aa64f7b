"""Schema migrations of the registry database (Alembic, scripts under ``migrations/``).

``ensure_schema`` is called on every CLI start: its fast path (schema already at ``HEAD_REVISION``)
reads the ``alembic_version`` table with plain SQLAlchemy and does not import Alembic.

Every migration of a SQLite database runs under ``promptreg.registry.db.schema_lock`` (a lock file
next to the database): on first use, whoever gets there first creates the schema, the others wait and
then find it at head. PostgreSQL migrations are serialised by an advisory lock (migrations/env.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from promptreg.errors import PromptregError, StoreUnavailableError
from promptreg.registry.db import make_engine, mask_url, schema_lock, sqlite_file, translate_db_error
from promptreg.registry.revision import HEAD_REVISION  # the newest migration this promptreg knows

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config


MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

VERSION_TABLE = "alembic_version"


class SchemaVersionError(StoreUnavailableError):
    """The database schema is not at the revision this promptreg needs (older or newer)."""


def alembic_config(url: str) -> Config:
    """An Alembic config for ``url`` built in code (no alembic.ini needed)."""
    from alembic.config import Config

    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise StoreUnavailableError(f"promptreg migrations not found at {MIGRATIONS_DIR}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # configparser interpolation: a literal % (e.g. URL-encoded password) must be doubled
    cfg.set_main_option("sqlalchemy.url", str(url).replace("%", "%%"))
    cfg.attributes["promptreg_url"] = str(url)
    return cfg


def _run_alembic(fn_name: str, url: str, revision: str) -> None:
    from alembic import command
    from alembic.util import CommandError

    try:
        getattr(command, fn_name)(alembic_config(url), revision)
    except PromptregError:
        raise
    except CommandError as exc:
        raise StoreUnavailableError(
            f"registry database {mask_url(url)}: cannot {fn_name} to {revision}: {exc}"
        ) from exc
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, url) from exc


@contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """The inter-process schema lock of a SQLite database file; nothing for other backends."""
    path = sqlite_file(url)
    if path is None:
        yield
        return
    with schema_lock(path):
        yield


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the newest)."""
    with _migration_lock(url):
        _run_alembic("upgrade", url, revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"``: drop everything)."""
    with _migration_lock(url):
        _run_alembic("downgrade", url, revision)


def current_revision(url: str) -> str | None:
    """The schema revision recorded in the database, or None for a database without one.

    Plain SQLAlchemy, no Alembic import.
    """
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(VERSION_TABLE):
                return None
            rows = [r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))]
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, url) from exc
    if not rows:
        return None
    if len(rows) > 1:
        raise SchemaVersionError(
            f"registry database {mask_url(url)} has several schema heads {sorted(rows)}; "
            "it was not migrated by promptreg"
        )
    return rows[0]


def _known_revisions(url: str) -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(url))
    return {rev.revision for rev in script.walk_revisions()}


def _upgrade_empty(url: str) -> None:
    """First use: create the schema (the caller holds the SQLite schema lock). Safe when several
    processes do it at once: on PostgreSQL the migration env takes an advisory lock, on SQLite the
    lock serialises them (and the migration runs in one BEGIN IMMEDIATE transaction); should a racer
    still fail, it succeeds as soon as the winner has finished."""
    attempts = 3
    for attempt in range(1, attempts + 1):
        try:
            _run_alembic("upgrade", url, "head")
            return
        except PromptregError:
            try:
                if current_revision(url) == HEAD_REVISION:
                    return
            except PromptregError:
                pass
            if attempt == attempts:
                raise
            time.sleep(0.5 * attempt)


def ensure_schema(url: str, *, auto_upgrade: bool) -> None:
    """Make sure the database at ``url`` has the schema this promptreg needs.

    At head: return at once (no Alembic import, no lock). Otherwise, holding the schema lock (SQLite)
    and reading the revision again (another process may have migrated meanwhile): empty database:
    create the schema; older schema: upgrade when ``auto_upgrade``, otherwise raise; unknown or newer
    schema: raise.
    """
    if current_revision(url) == HEAD_REVISION:
        return
    with _migration_lock(url):
        _ensure_schema_locked(url, auto_upgrade=auto_upgrade)


def _ensure_schema_locked(url: str, *, auto_upgrade: bool) -> None:
    current = current_revision(url)
    if current == HEAD_REVISION:
        return
    if current is None:
        _upgrade_empty(url)
        return
    if current not in _known_revisions(url):
        raise SchemaVersionError(
            f"registry database schema {current} is newer than this promptreg ({HEAD_REVISION}): "
            "upgrade promptreg"
        )
    if not auto_upgrade:
        raise SchemaVersionError(
            f"registry database schema is at {current}, this promptreg needs {HEAD_REVISION}: "
            "run `promptreg db upgrade`"
        )
    _run_alembic("upgrade", url, "head")


__all__ = [
    "HEAD_REVISION",
    "MIGRATIONS_DIR",
    "SchemaVersionError",
    "alembic_config",
    "current_revision",
    "downgrade",
    "ensure_schema",
    "upgrade",
]

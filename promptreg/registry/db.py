"""Engines and sessions for the registry database (SQLite or PostgreSQL).

No heavy imports here: this module is on the CLI start-up path.

Creating or migrating an embedded SQLite database (the registry's ``registry.db``, MLflow's
``mlflow.db``) happens under :func:`schema_lock`, an inter-process lock file next to the database,
so that on first use whoever gets there first creates the schema and the others wait, then proceed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session

from promptreg.errors import ConflictError, PromptregError, StoreUnavailableError

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def mask_url(url: str | sa.URL | Engine | None) -> str:
    """The URL as text with its password replaced by ``***``."""
    if url is None:
        return "<unknown>"
    if isinstance(url, Engine):
        url = url.url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a parseable URL: show it without anything that looks like credentials
        text = str(url)
        return text.split("@", 1)[-1] if "@" in text else text


def _sqlite_path(url: sa.URL) -> Path | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(db)


def sqlite_file(url: str | sa.URL) -> Path | None:
    """The database file of a ``sqlite:///`` URL (absolute), or None for another backend, an in-memory
    database or a ``file:`` URI database."""
    try:
        u = make_url(url)
    except sa.exc.ArgumentError:
        return None
    if u.get_backend_name() != "sqlite":
        return None
    path = _sqlite_path(u)
    return path.expanduser().absolute() if path is not None else None


#: How long a process waits for another one to finish creating or migrating a database.
SCHEMA_LOCK_TIMEOUT_S = 600.0


@contextmanager
def schema_lock(db_file: Path, timeout: float = SCHEMA_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the inter-process lock that serialises creating, migrating and repairing the SQLite
    database ``db_file``: the lock file ``<db_file>.lock`` next to it (``filelock``; the folder is
    created). Raises StoreUnavailableError after ``timeout`` seconds of waiting."""
    from filelock import FileLock, Timeout

    db_file = Path(db_file)
    lock_path = db_file.with_name(db_file.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailableError(f"cannot create the folder of {db_file}: {exc.strerror or exc}") from None
    lock = FileLock(str(lock_path), timeout=timeout)
    started = time.monotonic()
    try:
        lock.acquire()
    except Timeout:
        raise StoreUnavailableError(
            f"another process has been creating or migrating {db_file} for {time.monotonic() - started:.0f} s "
            f"(lock {lock_path}): try again when it has finished") from None
    except OSError as exc:
        raise StoreUnavailableError(f"cannot lock {lock_path}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()


def _create_engine(url: str) -> Engine:
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_path(u)
        if path is not None:
            path.expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(u, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_on_connect(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            # Let SQLAlchemy (the "begin" hook below) own the transactions instead of pysqlite.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA journal_mode=WAL")
            finally:
                cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_on_begin(conn) -> None:  # pragma: no cover - trivial
            # Take the write lock up front: a deferred transaction that reads and then writes can fail
            # at once with "database is locked" under WAL when another writer committed in between;
            # BEGIN IMMEDIATE waits (busy_timeout) instead, which makes compare-and-swap safe.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if backend == "postgresql":
        return sa.create_engine(u, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    return sa.create_engine(u, pool_pre_ping=True)


def make_engine(url: str) -> Engine:
    """The engine for ``url``, created once per URL in this process.

    SQLite: the parent folder is created; each connection gets foreign_keys=ON, WAL journal,
    busy_timeout=30 s, and transactions start with BEGIN IMMEDIATE. PostgreSQL: pre-ping, 5 s connect
    timeout.
    """
    key = str(url)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            try:
                engine = _create_engine(key)
            except sa.exc.ArgumentError as exc:
                raise StoreUnavailableError(f"invalid registry database URL {mask_url(key)}: {exc}") from exc
            except ImportError as exc:
                raise StoreUnavailableError(
                    f"registry database URL {mask_url(key)} needs a missing driver: {exc}"
                ) from exc
            _ENGINES[key] = engine
        return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, forks)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


def _short_reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = lines[0] if lines else type(orig).__name__
    # drop SQLAlchemy's trailing "(Background on this error at: ...)" if it slipped in
    reason = reason.split("(Background on this error", 1)[0].strip()
    return reason[:300]


def translate_db_error(exc: BaseException, url: str | sa.URL | Engine | None = None) -> PromptregError:
    """A one-line :class:`PromptregError` for a SQLAlchemy/DBAPI exception (returned, not raised).

    Connection-level failures (server down, bad host, unknown database, locked SQLite file) become
    :class:`StoreUnavailableError`; unique/foreign-key violations become :class:`ConflictError`.
    """
    if isinstance(exc, PromptregError):
        return exc
    where = mask_url(url) if url is not None else "<url unknown>"
    reason = _short_reason(exc)
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        low = reason.lower()
        if "database is locked" in low or "database table is locked" in low:
            return StoreUnavailableError(f"registry database {where} is locked by another process: {reason}")
        return StoreUnavailableError(f"registry database {where} unreachable: {reason}")
    if isinstance(exc, sa.exc.IntegrityError):
        return ConflictError(f"registry database {where} rejected a conflicting write: {reason}")
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return StoreUnavailableError(f"registry database {where} error: {reason}")
    return StoreUnavailableError(f"registry database {where} error: {type(exc).__name__}: {reason}")


@contextmanager
def session(engine: Engine) -> Iterator[Session]:
    """A SQLModel session that commits when the block succeeds and rolls back when it raises.

    ``expire_on_commit=False``: objects stay readable after the block. Connection-level failures
    (OperationalError/InterfaceError) leave the block as :class:`StoreUnavailableError`; other
    exceptions (including SQLAlchemy's IntegrityError) pass through unchanged.
    """
    sess = Session(engine, expire_on_commit=False)
    try:
        yield sess
        sess.commit()
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        _safe_rollback(sess)
        raise translate_db_error(exc, engine) from exc
    except BaseException:
        _safe_rollback(sess)
        raise
    finally:
        sess.close()


def _safe_rollback(sess: Session) -> None:
    try:
        sess.rollback()
    except Exception:
        pass


def check(engine: Engine) -> None:
    """Run ``select 1``; raise :class:`StoreUnavailableError` if the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, engine) from exc


__all__ = ["check", "dispose_engines", "make_engine", "mask_url", "schema_lock", "session", "sqlite_file",
           "translate_db_error"]

"""MLflow's embedded SQLite database (the default ``./.promptreg/mlflow.db``): created once, inspected
without writing, repaired.

Invariants:

* An ``MlflowClient`` on a ``sqlite:///`` tracking URI is only built by :func:`open_client`. MLflow
  creates and migrates a SQLite database by itself whenever one of its stores opens a database whose
  tables are not all there, with no lock between processes, and every DDL statement of a SQLite
  migration commits on its own: concurrent (or interrupted) first uses leave the database
  half-migrated for good. So :func:`open_client` returns at once when the database is usable (at
  MLflow's head, every table there); otherwise it takes ``schema_lock`` (``mlflow.db.lock`` next to
  the database) and looks again: a missing or empty database is then created once, by whoever got
  the lock first (the others find it done), in a scratch file beside it that is renamed into place
  when it is complete, so that a killed creator leaves no half-migrated database; a database in any
  other state is never touched: a one-line StoreUnavailableError names the state and the repair.
* :func:`inspect_db` only reads: a missing file is not created, nothing is locked.
* :func:`repair_db` (under the same lock) never edits the damaged file: it builds a new database
  beside it at the revision the damaged one records, copies every table's rows into it (a table an
  interrupted batch migration left only as ``_alembic_tmp_<table>`` is read from there; columns a
  half-applied migration added are left out, so that migration runs again in full), runs MLflow's
  migrations up to its head, checks the result, keeps a copy of the damaged file, and only then
  renames the new database into place. What could not be carried over is reported.

MLflow facts relied on (mlflow 3.17 source): the tables of the current schema are
``mlflow.store.db.base_sql_model.Base.metadata`` (``mlflow.store.db.utils`` imports every ORM model);
the state before the first migration is ``mlflow.store.tracking.dbmodels.initial_models.Base``;
``mlflow.store.db.utils._get_alembic_config`` / ``_get_latest_schema_revision`` are what ``mlflow db
upgrade`` uses; alembic's SQLite batch mode copies a table through ``_alembic_tmp_<table>`` (name cut
at 50 characters). MLflow logs at INFO while it creates tables; the CLI keeps that quiet unless
``--verbose`` (promptreg.cli.main).
"""

from __future__ import annotations

import glob
import logging
import os
import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from promptreg.errors import StoreUnavailableError
from promptreg.registry.db import schema_lock, sqlite_file

_logger = logging.getLogger(__name__)

TMP_PREFIX = "_alembic_tmp_"
VERSION_TABLE = "alembic_version"
REPAIR_HINT = "run `promptreg doctor --repair` (it keeps a copy of the file)"

FRESH = ("missing", "empty")       # created on first use
USABLE = ("ok", "leftovers")       # MLflow opens it without migrating


@dataclass(frozen=True)
class DbState:
    """What :func:`inspect_db` found. ``status``: missing | empty | ok | leftovers (at head, usable, but
    an interrupted migration's ``_alembic_tmp_*`` tables are left) | damaged (not at head, or tables
    missing) | newer (a revision this MLflow does not know) | unreadable."""

    path: Path
    status: str
    revision: str | None = None
    head: str | None = None
    leftovers: tuple[str, ...] = ()
    missing_tables: tuple[str, ...] = ()
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.status in USABLE

    @property
    def fresh(self) -> bool:
        return self.status in FRESH

    @property
    def clean(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        """One line for ``doctor``: the state and, when it needs one, the repair."""
        if self.fresh:
            return "not initialised yet (created on first use)"
        if self.status == "ok":
            return f"schema {self.revision}"
        if self.status == "newer":
            return (f"schema {self.revision} is unknown to MLflow {_mlflow_version()} (written by a newer "
                    "MLflow?): upgrade mlflow")
        if self.status == "unreadable":
            return f"cannot be read: {self.reason}"
        left = f"leftover table(s) {', '.join(self.leftovers)}" if self.leftovers else ""
        if self.status == "leftovers":
            return f"an interrupted MLflow migration left {left} (schema {self.revision}): {REPAIR_HINT}"
        parts = [f"schema {self.revision or 'none'}, MLflow {_mlflow_version()} needs {self.head}"]
        if left:
            parts.append(left)
        if self.missing_tables:
            parts.append(f"{len(self.missing_tables)} table(s) missing")
        what = "half-migrated" if self.leftovers or self.revision == self.head else \
            "half-migrated or from an older MLflow"
        return f"{what} ({'; '.join(parts)}): {REPAIR_HINT}"

    def problem(self) -> str:
        return f"MLflow database {self.path}: {self.describe()}"


@dataclass
class RepairReport:
    path: Path
    backup: Path
    revision_before: str | None
    revision_after: str
    tables: int = 0
    rows: int = 0
    dropped_leftovers: list[str] = field(default_factory=list)
    not_carried: list[str] = field(default_factory=list)   # "table (N rows)" / "table.column (N values)"

    def summary(self) -> str:
        text = (f"repaired MLflow database {self.path}: schema {self.revision_before or 'none'} -> "
                f"{self.revision_after}, {self.rows} row(s) of {self.tables} table(s) carried over")
        if self.dropped_leftovers:
            text += f", dropped {', '.join(self.dropped_leftovers)}"
        if self.not_carried:
            text += f"; not carried over (still in the copy): {', '.join(self.not_carried)}"
        return text + f"; the damaged file is kept as {self.backup}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "backup": str(self.backup), "revision_before": self.revision_before,
                "revision_after": self.revision_after, "tables": self.tables, "rows": self.rows,
                "dropped_leftovers": self.dropped_leftovers, "not_carried": self.not_carried}


# ---------------------------------------------------------------------------------------------- MLflow
def _mlflow_version() -> str:
    from mlflow.version import VERSION

    return VERSION


def _schema() -> tuple[set[str], str, set[str]]:
    """(tables of MLflow's current schema, its head revision, every revision MLflow knows)."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db import utils
    from mlflow.store.db.base_sql_model import Base

    script = ScriptDirectory.from_config(utils._get_alembic_config(""))
    return set(Base.metadata.tables), utils._get_latest_schema_revision(), {
        r.revision for r in script.walk_revisions()}


def _engine(db_file: Path):
    """An engine on a database file no one else uses yet: synchronous=OFF (it is fsynced before it is
    renamed into place)."""
    import sqlalchemy as sa
    from sqlalchemy import event

    engine = sa.create_engine(f"sqlite:///{db_file}")
    event.listen(engine, "connect", lambda dbapi_conn, _record: dbapi_conn.execute("PRAGMA synchronous=OFF"))
    return engine


def _alembic_upgrade(db_file: Path, revision: str) -> None:
    """Run MLflow's migrations on ``db_file`` up to ``revision`` ("heads": the newest)."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config

    engine = _engine(db_file)
    try:
        config = _get_alembic_config(str(engine.url))
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def _build(db_file: Path, revision: str | None) -> None:
    """A new database file with MLflow's schema at ``revision`` (None: before the first migration;
    "heads": the newest), made the way MLflow makes one (``_initialize_tables``)."""
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    engine = _engine(db_file)
    try:
        InitialBase.metadata.create_all(engine)
    finally:
        engine.dispose()
    if revision is not None:
        _alembic_upgrade(db_file, revision)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scratch(path: Path, purpose: str) -> Path:
    """A new file name beside ``path``; scratch files a killed process left are removed (the caller
    holds the schema lock, so no one else is writing one)."""
    for stale in path.parent.glob(glob.escape(f".{path.name}.") + "*-*"):
        if stale.name.split(".")[-1].split("-")[0] in ("create", "repair"):
            stale.unlink(missing_ok=True)
    return path.with_name(f".{path.name}.{purpose}-{uuid.uuid4().hex[:8]}")


# ---------------------------------------------------------------------------------------------- inspect
def _connect(path: Path) -> sqlite3.Connection:
    """A connection to an existing database file (``mode=rw``: never creates one). Opening rolls back a
    hot journal a killed writer left, as any SQLite reader does; nothing else is written."""
    return sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=30)


def _tables(conn: sqlite3.Connection, schema: str = "main") -> set[str]:
    return {r[0] for r in conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")
            if not r[0].startswith("sqlite_")}


def inspect_db(path: Path) -> DbState:
    """The state of MLflow's SQLite database file ``path``; reads only."""
    path = Path(path).absolute()
    if not path.exists():
        return DbState(path, "missing")
    try:
        with closing(_connect(path)) as conn:
            names = _tables(conn)
            revisions = [r[0] for r in conn.execute(f"SELECT version_num FROM {VERSION_TABLE}")] \
                if VERSION_TABLE in names else []
    except sqlite3.Error as exc:
        return DbState(path, "unreadable", reason=f"{type(exc).__name__}: {exc}")
    leftovers = tuple(sorted(n for n in names if n.startswith(TMP_PREFIX)))
    real = {n for n in names if not n.startswith(TMP_PREFIX) and not n.startswith("alembic_")}
    if not real and not leftovers and not revisions:
        return DbState(path, "empty")
    expected, head, known = _schema()
    if len(revisions) > 1:
        return DbState(path, "damaged", head=head, leftovers=leftovers,
                       revision="+".join(sorted(revisions)), reason="several schema revisions")
    revision = revisions[0] if revisions else None
    if revision is not None and revision not in known:
        return DbState(path, "newer", revision=revision, head=head)
    missing = tuple(sorted(expected - real))
    if revision == head and not missing:
        return DbState(path, "leftovers" if leftovers else "ok", revision, head, leftovers)
    return DbState(path, "damaged", revision, head, leftovers, missing)


def settled_state(path: Path) -> DbState:
    """:func:`inspect_db`; a state neither clean nor fresh is looked at again once the schema lock is
    free (another process may be creating the database right now)."""
    state = inspect_db(path)
    if state.clean or state.fresh:
        return state
    with schema_lock(path):
        return inspect_db(path)


# ---------------------------------------------------------------------------------------------- open
def open_client(tracking_uri: str):
    """An ``MlflowClient`` for ``tracking_uri`` (also its registry URI). For a SQLite database: created
    first if missing or empty, once, under the schema lock; refused (one line, with the repair) when
    MLflow would have to migrate it."""
    from mlflow.tracking import MlflowClient

    path = sqlite_file(tracking_uri)
    if path is None:
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        state = inspect_db(path)
        if not state.usable:
            with schema_lock(path):
                state = inspect_db(path)           # another process may have created it while we waited
                if state.fresh:
                    return _create(tracking_uri, path)
    except StoreUnavailableError as exc:
        raise StoreUnavailableError(f"MLflow at {tracking_uri} unreachable: {exc}") from None
    if not state.usable:
        raise StoreUnavailableError(f"MLflow at {tracking_uri}: {state.describe()}")
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _create(tracking_uri: str, path: Path):
    """Build MLflow's schema in a scratch file and rename it into place, so that no one ever sees a
    half-created database (the caller holds the lock); then MLflow's stores add their first rows."""
    from mlflow.tracking import MlflowClient

    new = _scratch(path, "create")
    _logger.info("creating the MLflow database %s (MLflow %s)", path, _mlflow_version())
    try:
        _build(new, "heads")
        state = inspect_db(new)
        if not state.clean:
            raise StoreUnavailableError(f"cannot create the MLflow database {path}: it came out {state.describe()}")
        _fsync(new)
        os.replace(new, path)
    finally:
        new.unlink(missing_ok=True)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.search_experiments(max_results=1)          # the tracking store: the default experiment
    client.search_registered_models(max_results=1)    # the model-registry store
    return client


def ensure_tracking_db(tracking_uri: str) -> None:
    """Create the tracking URI's SQLite database if it is missing or empty (before ``mlflow ui`` opens
    it); refuse one MLflow would have to migrate. Nothing for other tracking URIs."""
    if sqlite_file(tracking_uri) is not None:
        open_client(tracking_uri)


# ---------------------------------------------------------------------------------------------- repair
def repair_db(path: Path) -> RepairReport | None:
    """Rebuild a damaged (half-migrated, leftover-laden or older) MLflow database ``path`` at MLflow's
    head; None when there is nothing to repair (clean, missing or empty). Stop other processes that
    use the file first: one still writing to it is refused."""
    path = Path(path).absolute()
    if not path.exists():
        return None
    with schema_lock(path):
        state = inspect_db(path)
        if state.clean or state.fresh:
            return None
        if state.status in ("newer", "unreadable") or state.reason:
            raise StoreUnavailableError(f"cannot repair: {state.problem()}")
        _check_integrity(path)
        _logger.info("repairing the MLflow database %s: %s", path, state.describe())
        new = _scratch(path, "repair")
        try:
            report = _rebuild(path, new, state)
            after = inspect_db(new)
            if not after.clean:
                raise StoreUnavailableError(f"cannot repair {path}: the rebuilt database is {after.describe()}")
            _fsync(new)
            _refuse_if_in_use(path)
            _backup(path, report.backup)
            os.replace(new, path)
        finally:
            new.unlink(missing_ok=True)
        _forget_mlflow_engines(path)
        return report


def _check_integrity(path: Path) -> None:
    with closing(_connect(path)) as conn:
        result = [r[0] for r in conn.execute("PRAGMA quick_check")]
    if result != ["ok"]:
        raise StoreUnavailableError(f"cannot repair {path}: SQLite reports it corrupt ({'; '.join(result[:3])})")


def _rebuild(path: Path, new: Path, state: DbState) -> RepairReport:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = RepairReport(path, path.with_name(f"{path.name}.damaged-{stamp}"), state.revision, state.head or "")
    _build(new, state.revision)          # exactly where the damaged database stands
    with closing(sqlite3.connect(new.as_uri(), uri=True, timeout=30)) as conn:
        conn.execute("ATTACH DATABASE ? AS old", (f"{path.as_uri()}?mode=ro",))
        _copy_rows(conn, report)
        conn.commit()
        conn.execute("DETACH DATABASE old")
    _alembic_upgrade(new, "heads")
    return report


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA {schema}.table_info({_quote(table)})")]


def _copy_rows(conn: sqlite3.Connection, report: RepairReport) -> None:
    """Every table of the new database (at the damaged one's revision) gets the damaged one's rows."""
    new_tables = _tables(conn, "main") - {VERSION_TABLE}
    old_tables = _tables(conn, "old")
    used: set[str] = set()
    for table in sorted(new_tables):
        tmp = (TMP_PREFIX + table)[:50]
        source = table if table in old_tables else tmp if tmp in old_tables else None
        if source is None:
            continue
        used.add(source)
        old_cols = _columns(conn, "old", source)
        cols = [c for c in _columns(conn, "main", table) if c in old_cols]
        names = ", ".join(_quote(c) for c in cols)
        conn.execute(f"DELETE FROM main.{_quote(table)}")
        cur = conn.execute(f"INSERT INTO main.{_quote(table)} ({names}) SELECT {names} FROM old.{_quote(source)}")
        report.tables += 1
        report.rows += max(cur.rowcount, 0)
        for col in old_cols:
            if col not in cols:   # added by a half-applied migration (it runs again) or unknown
                n = conn.execute(f"SELECT count(*) FROM old.{_quote(source)} WHERE {_quote(col)} IS NOT NULL").fetchone()[0]
                if n:
                    report.not_carried.append(f"{table}.{col} ({n} values)")
    if "sqlite_sequence" in {r[0] for r in conn.execute("SELECT name FROM old.sqlite_master")}:
        for name, seq in conn.execute("SELECT name, seq FROM old.sqlite_sequence").fetchall():
            if name in new_tables:   # AUTOINCREMENT never reuses an id the damaged database handed out
                conn.execute("UPDATE main.sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, name))
                conn.execute("INSERT INTO main.sqlite_sequence (name, seq) SELECT ?, ? WHERE NOT EXISTS "
                             "(SELECT 1 FROM main.sqlite_sequence WHERE name = ?)", (name, seq, name))
    for table in sorted(old_tables - used - {VERSION_TABLE}):
        if table.startswith(TMP_PREFIX):
            report.dropped_leftovers.append(table)
            continue
        n = conn.execute(f"SELECT count(*) FROM old.{_quote(table)}").fetchone()[0]
        if n:
            report.not_carried.append(f"{table} ({n} rows)")


def _backup(path: Path, backup: Path) -> None:
    """A consistent copy of the damaged database (SQLite's backup API)."""
    with closing(_connect(path)) as src, closing(sqlite3.connect(backup)) as dst:
        src.backup(dst)


def _refuse_if_in_use(path: Path) -> None:
    """Refuse while another process holds the file (a transaction open, or a WAL file). One write
    transaction, rolled back, also makes SQLite clear a rollback journal a killed writer left beside
    the file (not hot, so no reader removed it): it must not sit next to the new file."""
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=5, isolation_level=None)) as conn:
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("CREATE TABLE _promptreg_repair_probe (x)")
            conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        raise StoreUnavailableError(f"cannot repair {path}: another process is using it ({exc}): stop it and "
                                    "repair again") from None
    for suffix in ("-journal", "-wal"):
        side = path.with_name(path.name + suffix)
        if side.exists() and side.stat().st_size > 0:
            raise StoreUnavailableError(
                f"cannot repair {path}: another process is using it ({side.name}): stop it and repair again")


def _forget_mlflow_engines(path: Path) -> None:
    """Engines MLflow cached in this process for the old file would keep reading it: dispose them."""
    import sys

    for module in ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store"):
        store = getattr(sys.modules.get(module), "SqlAlchemyStore", None)
        engines = getattr(store, "_engine_map", None)
        if not isinstance(engines, dict):
            continue
        for uri in [u for u in engines if sqlite_file(u) == path]:
            engines.pop(uri).dispose()


__all__ = ["DbState", "RepairReport", "ensure_tracking_db", "inspect_db", "open_client", "repair_db",
           "settled_state"]

"""The read commands' fast path on a SQLite registry: stdlib ``sqlite3``, no SQLAlchemy/sqlmodel import.

``promptreg list``, ``show`` and shell completion start a process for one or two reads; importing
SQLAlchemy and sqlmodel costs more than the reads themselves. :func:`open_reader` returns a
:class:`SqliteReader` when the registry database is an existing SQLite file whose schema is exactly at
:data:`HEAD_REVISION`, else None (the caller then uses :class:`promptreg.Registry`, which creates or
upgrades the schema as usual).

Invariants:
- Read-only: the file is opened with ``mode=ro``; nothing is created or written.
- Same answers as the Registry: the same rows, rendered by the same :func:`views.version_info`, the
  same typed not-found errors and messages (tests/test_cli_fast_reads.py compares both on one database).
- Any ``sqlite3`` error raises :class:`FastPathUnavailable`; the caller falls back to the Registry,
  which reports real problems in its usual one-line form.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

from promptreg.errors import AliasNotFoundError, PromptNotFoundError, VersionNotFoundError
from promptreg.refs import Ref, check_name, check_page, parse_ref
from promptreg.registry.revision import HEAD_REVISION
from promptreg.services.views import PromptSummary, VersionInfo, iso, version_info

_VERSION_COLUMNS = ("id", "prompt_id", "number", "sha256", "artifact_uri", "size_bytes", "method", "method_config",
                    "base_model_fingerprint", "base_model_name", "dataset_fingerprint", "metrics", "mlflow_run_id",
                    "mlflow_model_version", "mirror_status", "mirror_error", "status", "description", "created_by",
                    "created_at")
_SELECT_VERSION = ("SELECT " + ", ".join(f"v.{c}" for c in _VERSION_COLUMNS)
                   + ", json_extract(v.manifest, '$.num_virtual_tokens'), p.task_type FROM prompt_version v "
                     "JOIN prompt p ON p.id = v.prompt_id")


class FastPathUnavailable(Exception):
    """The SQLite file cannot be read here: use the Registry instead."""


def sqlite_file(db_url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` URL (no query, not in memory), else None."""
    if not db_url.startswith("sqlite:///") or "?" in db_url:
        return None
    path = db_url[len("sqlite:///"):]
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def open_reader(db_url: str) -> SqliteReader | None:
    path = sqlite_file(db_url)
    if path is None or not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except (sqlite3.Error, ValueError):
        return None
    reader = SqliteReader(conn)
    try:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        rows = []
    if [r[0] for r in rows] != [HEAD_REVISION]:
        reader.close()
        return None
    return reader


def _when(text) -> dt.datetime | None:
    if text is None:
        return None
    when = dt.datetime.fromisoformat(str(text))
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _json(text) -> dict:
    return json.loads(text) if isinstance(text, str) else dict(text or {})


class SqliteReader:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def _all(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise FastPathUnavailable(str(exc)) from exc

    def _view(self, name: str, row: tuple, aliases: list[str]) -> VersionInfo:
        v = SimpleNamespace(**dict(zip(_VERSION_COLUMNS, row, strict=False)))
        v.metrics, v.method_config, v.created_at = _json(v.metrics), _json(v.method_config), _when(v.created_at)
        return version_info(name, row[-1], v, aliases, row[-2])

    # ----- names, for shell completion ----------------------------------------------------------
    def prompt_names(self, prefix: str = "") -> list[str]:
        return [r[0] for r in self._all("SELECT name FROM prompt WHERE substr(name, 1, ?) = ? ORDER BY name",
                                        (len(prefix), prefix))]

    def alias_names(self, name: str) -> list[str]:
        return [r[0] for r in self._all("SELECT a.name FROM alias a JOIN prompt p ON p.id = a.prompt_id "
                                        "WHERE p.name = ? ORDER BY a.name", (name,))]

    def version_numbers(self, name: str) -> list[int]:
        return [r[0] for r in self._all("SELECT v.number FROM prompt_version v JOIN prompt p ON p.id = v.prompt_id "
                                        "WHERE p.name = ? ORDER BY v.number", (name,))]

    # ----- the Registry's read API ----------------------------------------------------------------
    def list_prompts(self) -> list[PromptSummary]:
        counts = {pid: (n, latest) for pid, n, latest in self._all(
            "SELECT prompt_id, count(*), max(number) FROM prompt_version GROUP BY prompt_id")}
        aliases: dict[int, dict[str, int]] = {}
        for pid, alias, number in self._all("SELECT a.prompt_id, a.name, v.number FROM alias a "
                                            "JOIN prompt_version v ON v.id = a.version_id"):
            aliases.setdefault(pid, {})[alias] = number
        return [PromptSummary(name, task, desc or "", counts.get(pid, (0, None))[0], counts.get(pid, (0, None))[1],
                              aliases.get(pid, {}), iso(_when(created)))
                for pid, name, task, desc, created in self._all(
                    "SELECT id, name, task_type, description, created_at FROM prompt ORDER BY name")]

    def _prompt_exists(self, name: str) -> None:
        if not self._all("SELECT 1 FROM prompt WHERE name = ?", (name,)):
            raise PromptNotFoundError(f"no prompt named {name!r}")

    def version_page(self, name: str, *, limit: int | None = None, offset: int = 0) -> tuple[list[VersionInfo], bool]:
        check_name(name)
        check_page(limit, offset)
        rows = self._all(f"{_SELECT_VERSION} WHERE p.name = ? ORDER BY v.number LIMIT ? OFFSET ?",
                         (name, -1 if limit is None else limit + 1, offset))
        if not rows:
            self._prompt_exists(name)
            return [], False
        more = limit is not None and len(rows) > limit
        rows = rows[:limit] if limit is not None else rows
        held: dict[int, list[str]] = {r[0]: [] for r in rows}
        marks = ", ".join("?" * len(held))
        for version_id, alias in self._all(f"SELECT version_id, name FROM alias WHERE prompt_id = ? AND version_id IN "
                                           f"({marks})", (rows[0][1], *held)):
            held[version_id].append(alias)
        return [self._view(name, r, sorted(held[r[0]])) for r in rows], more

    def _resolve(self, ref: Ref) -> tuple:
        if ref.alias is not None:
            rows = self._all(f"{_SELECT_VERSION} JOIN alias a ON a.version_id = v.id WHERE p.name = ? AND a.name = ?",
                             (ref.name, ref.alias))
            missing = AliasNotFoundError(f"{ref.name} has no alias {ref.alias!r}")
        elif ref.version is not None:
            rows = self._all(f"{_SELECT_VERSION} WHERE p.name = ? AND v.number = ?", (ref.name, ref.version))
            missing = VersionNotFoundError(f"{ref.name} has no version {ref.version}")
        else:
            rows = self._all(f"{_SELECT_VERSION} WHERE p.name = ? ORDER BY v.number DESC LIMIT 1", (ref.name,))
            missing = VersionNotFoundError(f"{ref.name} has no versions")
        if not rows:
            self._prompt_exists(ref.name)
            raise missing
        return rows[0]

    def show(self, ref: str | Ref) -> VersionInfo:
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        row = self._resolve(ref)
        aliases = [r[0] for r in self._all("SELECT name FROM alias WHERE version_id = ? ORDER BY name", (row[0],))]
        return self._view(ref.name, row, aliases)

    def manifest(self, ref: str | Ref) -> dict:
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        row = self._resolve(ref)
        return _json(self._all("SELECT manifest FROM prompt_version WHERE id = ?", (row[0],))[0][0])

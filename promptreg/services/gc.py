"""``promptreg gc``: find and remove orphaned uploads in the artifact store.

An *orphan* is something in the content-addressed store that no database row references:

* ``unreferenced``: a complete, verified artifact whose version (or eval run, drift report) never
  committed: the pushing process died between the upload and the commit, or the commit failed;
* ``incomplete`` (S3): objects of an upload that died before its completion marker was written;
* ``partial`` (local folder): a temporary upload folder under ``<store>/.tmp/`` left by a process
  that died mid-upload (or mid-delete).

Live content is every sha256 referenced by ``prompt_version.sha256``, ``eval_run.outcomes_sha256`` and
``drift_report.report_sha256``, whatever URI the row names: gc never deletes a referenced address.

The race with writers, and how it is closed. Every writer (push, eval, drift) uploads first and
commits the row that references the upload afterwards. Between the two, the upload is unreferenced
and looks exactly like an orphan, so a gc running at that moment could delete it and leave a row that
points at nothing. Three measures close this:

1. ``min_age_s`` (``--min-age-s``, default 3600): an orphan is only deleted when its newest object
   (file mtime / S3 LastModified) is older than this. A writer commits seconds after its upload, so
   an upload in flight (a partial upload included) is always younger than ``min_age_s`` and is kept;
   the age is checked again right before each deletion. This assumes that no writer stalls for
   longer than ``min_age_s`` between its upload and its commit, and that the S3 endpoint's clock
   agrees with this machine's to well within ``min_age_s``.
2. Content that was already in the store (an old orphan pushed again) is not re-uploaded, so its age
   stays old. gc therefore reads the references and deletes in ONE database transaction that blocks
   new references meanwhile (PostgreSQL: ``LOCK TABLE prompt_version, eval_run, drift_report IN SHARE
   MODE``; SQLite: the transaction's ``BEGIN IMMEDIATE`` write lock). A push's commit thus happens
   either before gc reads the references (gc sees it and keeps the content) or after gc's deletions
   are finished,
3. and ``push`` checks after its commit that the stored copy is still there
   (``ArtifactStore.has_files``) and uploads it again if a gc removed it.

Residual: an eval run or drift report that reuses an old unreferenced document has no step 3; it is
covered by steps 1-2 only (a deletion that finishes right before its commit would leave its
outcomes/report missing; the version itself is unaffected).

Deletions run in chunks of ``CHUNK`` addresses, one short transaction each, so writers are blocked
for at most one chunk's deletions.

Captured traffic (``captures/``, promptreg.registry.captures) is not content-addressed and no row
references it: gc deletes the capture and feedback objects whose whole UTC hour is older than the
retention (``--capture-retention-days``, else ``PROMPTREG_CAPTURE_RETENTION_DAYS``, else
``promptreg.toml`` ``[capture] retention_days``, else 30 days; 0 keeps them for ever), decided from
their keys alone, and nothing younger.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptreg.errors import InputError
from promptreg.registry import queries as q

if TYPE_CHECKING:
    from promptreg.services.registry import Registry

DEFAULT_MIN_AGE_S = 3600.0
DEFAULT_CAPTURE_RETENTION_DAYS = 30.0
RETENTION_ENV = "PROMPTREG_CAPTURE_RETENTION_DAYS"
CHUNK = 50
KINDS = ("unreferenced", "incomplete", "partial")


@dataclass
class Orphan:
    kind: str                 # one of KINDS
    sha256: str | None        # None for a local partial upload (its address is not known yet)
    location: str             # URI of the content address, or the path of the temporary folder
    age_s: float
    size_bytes: int
    deletable: bool           # older than min_age_s
    deleted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CaptureRetention:
    """What gc found (and removed) of the captured traffic."""

    retention_days: float                     # 0: kept for ever
    objects: int = 0                          # capture + feedback objects in the store
    bytes: int = 0
    expired: int = 0                          # objects older than the retention
    expired_bytes: int = 0
    deleted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GcReport:
    store: str
    min_age_s: float
    dry_run: bool
    referenced: int                                         # addresses referenced by the database
    stored: int                                             # addresses present in the store
    orphans: list[Orphan] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)        # referenced rows whose content is absent
    skipped: list[str] = field(default_factory=list)        # became referenced or young before deletion
    captures: CaptureRetention | None = None

    @property
    def deleted(self) -> list[Orphan]:
        return [o for o in self.orphans if o.deleted]

    @property
    def kept_young(self) -> list[Orphan]:
        return [o for o in self.orphans if not o.deletable]

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "min_age_s": self.min_age_s, "dry_run": self.dry_run,
                "referenced": self.referenced, "stored": self.stored,
                "orphans": [o.to_dict() for o in self.orphans],
                "deleted": [o.location for o in self.deleted],
                "kept_young": [o.location for o in self.kept_young],
                "bytes_deleted": sum(o.size_bytes for o in self.deleted),
                "missing": self.missing, "skipped": self.skipped,
                "captures": self.captures.to_dict() if self.captures else None}


# ----------------------------------------------------------------------------------- store scans
@dataclass
class _Entry:
    kind: str
    sha256: str | None
    location: str
    newest: float             # epoch seconds of the newest object
    size_bytes: int
    path: Path | None = None  # local partial uploads


def _tree_stats(path: Path) -> tuple[float, int]:
    """(newest mtime, total file bytes) of a file or folder tree; missing entries are skipped."""
    newest, size = 0.0, 0
    try:
        st = path.lstat()
    except OSError:
        return newest, size
    newest = st.st_mtime
    if not path.is_dir() or path.is_symlink():
        return newest, st.st_size
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            newest = max(newest, st.st_mtime)
            if name in filenames:
                size += st.st_size
    return newest, size


def _scan_local(store) -> tuple[dict[str, _Entry], list[_Entry]]:
    """(complete artifacts by sha, temporary leftovers) of a LocalStore."""
    shas: dict[str, _Entry] = {}
    for sha in store.list_shas():
        newest, size = _tree_stats(store.path_for(sha))
        shas[sha] = _Entry("unreferenced", sha, store.uri_for(sha), newest, size)
    partial: list[_Entry] = []
    tmp_root = store.root / ".tmp"
    if tmp_root.is_dir():
        for p in sorted(tmp_root.iterdir()):
            newest, size = _tree_stats(p)
            partial.append(_Entry("partial", None, str(p), newest, size, p))
    return shas, partial


def _scan_s3(store, only: str | None = None) -> dict[str, _Entry]:
    """Content addresses of an S3Store (complete or not), from one listing."""
    return {sha: _Entry("unreferenced" if st.complete else "incomplete", sha, store.uri_for(sha), st.newest,
                        st.size_bytes) for sha, st in store.content_stats(only).items()}


def _is_s3(store) -> bool:
    from promptreg.registry.store import S3Store

    return isinstance(store, S3Store)


def _current(store, entry: _Entry) -> _Entry | None:
    """The entry as it is now (None when gone): the re-check right before a deletion."""
    if entry.path is not None:
        if not os.path.lexists(entry.path):
            return None
        newest, size = _tree_stats(entry.path)
        return _Entry(entry.kind, None, entry.location, newest, size, entry.path)
    if _is_s3(store):
        return _scan_s3(store, only=entry.sha256).get(entry.sha256)
    final = store.path_for(entry.sha256)
    if not final.is_dir():
        return None
    newest, size = _tree_stats(final)
    return _Entry(entry.kind, entry.sha256, entry.location, newest, size)


def _delete(store, entry: _Entry) -> None:
    if entry.path is not None:
        from promptreg.registry.store import remove_tree

        if entry.path.is_dir() and not entry.path.is_symlink():
            remove_tree(entry.path)
        else:
            try:
                entry.path.unlink()
            except FileNotFoundError:
                pass
        return
    store.delete(entry.sha256)


def configured_retention_days(cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    """The configured retention of captured traffic in days (see the module docstring)."""
    from promptreg.settings import CONFIG_FILE, read_config_file

    env = os.environ if env is None else env
    raw, where = env.get(RETENTION_ENV), f"environment variable {RETENTION_ENV}"
    if raw in (None, ""):
        table = read_config_file(Path(cwd or os.getcwd()) / CONFIG_FILE)
        raw = (table.get("capture") or (table.get("promptreg") or {}).get("capture") or {}).get("retention_days")
        where = f"{CONFIG_FILE} [capture] retention_days"
    if raw is None:
        return DEFAULT_CAPTURE_RETENTION_DAYS
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected a number of days, got {raw!r}") from None
    if isinstance(raw, bool) or not value >= 0:
        raise InputError(f"{where}: expected a number of days >= 0, got {raw!r}")
    return value


def expire_captures(store, retention_days: float, *, delete: bool, now: dt.datetime | None = None) -> CaptureRetention:
    """Count the capture objects and (``delete``) remove those older than ``retention_days`` (0: none)."""
    from promptreg.registry.captures import expired, list_captures

    objects = list_captures(store) + list_captures(store, feedback=True)
    out = CaptureRetention(float(retention_days), len(objects), sum(o.size for o in objects))
    if retention_days <= 0:
        return out
    old = expired(objects, retention_days, now or dt.datetime.now(dt.UTC))
    out.expired, out.expired_bytes = len(old), sum(o.size for o in old)
    if delete:
        for i in range(0, len(old), 1000):
            store.delete_objects([o.key for o in old[i:i + 1000]])
        out.deleted = len(old)
    return out


# ----------------------------------------------------------------------------------- entry point
def collect_garbage(registry: Registry, *, min_age_s: float = DEFAULT_MIN_AGE_S, delete: bool = False,
                    capture_retention_days: float | None = None) -> GcReport:
    """List the store's orphans (``delete=False``) or delete those older than ``min_age_s``; the same for
    captured traffic older than the retention (``capture_retention_days``, else the configured one)."""
    if min_age_s is None or min_age_s < 0:
        raise InputError(f"--min-age-s must be >= 0, got {min_age_s}")
    if capture_retention_days is not None and not capture_retention_days >= 0:
        raise InputError(f"--capture-retention-days must be >= 0, got {capture_retention_days}")
    retention = capture_retention_days if capture_retention_days is not None else configured_retention_days()
    store = registry.store
    # List the store BEFORE reading the references: content committed meanwhile is then seen as
    # referenced (a reference read first could miss a commit whose upload the listing then sees).
    if _is_s3(store):
        present, partial = _scan_s3(store), []
    else:
        present, partial = _scan_local(store)
    with registry.session() as s:
        refs = q.content_references(s)
    now = time.time()
    report = GcReport(store=store.root_uri, min_age_s=float(min_age_s), dry_run=not delete,
                      referenced=len(refs), stored=len(present))
    entries = [e for sha, e in sorted(present.items()) if sha not in refs] + partial
    for e in entries:
        age = max(0.0, now - e.newest)
        report.orphans.append(Orphan(e.kind, e.sha256, e.location, round(age, 3), e.size_bytes,
                                     deletable=age >= min_age_s))
    for sha, users in sorted(refs.items()):
        for what, uri in users:
            if uri == store.uri_for(sha) and (sha not in present or present[sha].kind != "unreferenced"):
                report.missing.append(f"{what}: {uri}")
    report.captures = expire_captures(store, retention, delete=delete)
    if not delete:
        return report
    todo = [(o, e) for o, e in zip(report.orphans, entries, strict=True) if o.deletable]
    for i in range(0, len(todo), CHUNK):
        chunk = todo[i:i + CHUNK]
        with registry.session() as s:
            q.lock_references(s)
            live = q.content_references(s, {e.sha256 for _o, e in chunk if e.sha256})
            for orphan, entry in chunk:
                if entry.sha256 in live:
                    report.skipped.append(f"{orphan.location}: referenced meanwhile")
                    continue
                cur = _current(store, entry)
                if cur is None:
                    report.skipped.append(f"{orphan.location}: gone meanwhile")
                    continue
                if time.time() - cur.newest < min_age_s:
                    report.skipped.append(f"{orphan.location}: written to meanwhile")
                    continue
                _delete(store, entry)
                orphan.deleted = True
    return report


__all__ = ["DEFAULT_CAPTURE_RETENTION_DAYS", "DEFAULT_MIN_AGE_S", "CaptureRetention", "GcReport", "Orphan",
           "collect_garbage", "configured_retention_days", "expire_captures"]

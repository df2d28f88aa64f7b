"""Captured serving traffic in the artifact store: the layout, listing, reading and expiry.

Layout (beside the content-addressed ``sha256/`` tree of the same store)::

    captures/<prompt>/v<version>/date=YYYY-MM-DD/<HH>-<uuid>.jsonl     sampled requests and responses
    captures/_feedback/date=YYYY-MM-DD/<HH>-<uuid>.jsonl                ground truth: {request_id, label, ts}

Invariants: every object is written whole, once (``ArtifactStore.put_object``: a local rename or one S3
PUT), never appended to or rewritten, so a reader never sees half an object; the date and hour in a key
are those (UTC) of every row in it, so a time window and the retention are decided from keys alone.
``_feedback`` cannot be a prompt name (names start with a letter or digit).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass

from promptreg.errors import InputError

PREFIX = "captures/"
FEEDBACK_DIR = "_feedback"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_TAIL = r"date=(?P<date>\d{4}-\d{2}-\d{2})/(?P<hour>\d{2})-(?P<uid>[0-9a-f]{32})\.jsonl"
_ROWS_RE = re.compile(rf"captures/(?P<prompt>{_NAME})/v(?P<version>\d+)/{_TAIL}")
_FEEDBACK_RE = re.compile(rf"captures/{FEEDBACK_DIR}/{_TAIL}")
REQUEST_ID_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class CaptureObject:
    key: str
    kind: str                    # rows | feedback
    prompt: str | None
    version: int | None
    hour: dt.datetime            # UTC start of the hour its rows were captured in
    size: int

    @property
    def hour_end(self) -> dt.datetime:
        return self.hour + dt.timedelta(hours=1)


def _hour(at: dt.datetime) -> dt.datetime:
    at = at.astimezone(dt.UTC) if at.tzinfo else at.replace(tzinfo=dt.UTC)
    return at.replace(minute=0, second=0, microsecond=0)


def _tail(at: dt.datetime) -> str:
    h = _hour(at)
    return f"date={h:%Y-%m-%d}/{h:%H}-{uuid.uuid4().hex}.jsonl"


def rows_key(prompt: str, version: int, at: dt.datetime) -> str:
    """A new object key for rows of ``prompt:version`` captured in the hour of ``at``."""
    return f"{PREFIX}{prompt}/v{int(version)}/{_tail(at)}"


def feedback_key(at: dt.datetime) -> str:
    return f"{PREFIX}{FEEDBACK_DIR}/{_tail(at)}"


def parse_key(key: str, size: int = 0) -> CaptureObject | None:
    """The object a key names, or None when it is not a capture object."""
    m = _ROWS_RE.fullmatch(key)
    kind = "rows"
    if m is None:
        m, kind = _FEEDBACK_RE.fullmatch(key), "feedback"
        if m is None:
            return None
    try:
        hour = dt.datetime.strptime(f"{m['date']} {m['hour']}", "%Y-%m-%d %H").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    if kind == "rows":
        return CaptureObject(key, kind, m["prompt"], int(m["version"]), hour, size)
    return CaptureObject(key, kind, None, None, hour, size)


def list_captures(store, prompt: str | None = None, *, versions: set[int] | None = None,
                  since: dt.datetime | None = None, until: dt.datetime | None = None,
                  feedback: bool = False) -> list[CaptureObject]:
    """Capture objects (of ``prompt`` and ``versions`` when given; the feedback objects instead when
    ``feedback``) whose hour overlaps [since, until), oldest hour first."""
    prefix = PREFIX + (f"{FEEDBACK_DIR}/" if feedback else (f"{prompt}/" if prompt else ""))
    out = []
    for stat in store.list_objects(prefix):
        obj = parse_key(stat.key, stat.size)
        if obj is None or (obj.kind == "feedback") != feedback:
            continue
        if versions is not None and obj.version not in versions:
            continue
        if since is not None and obj.hour_end <= since:
            continue
        if until is not None and obj.hour >= until:
            continue
        out.append(obj)
    return sorted(out, key=lambda o: (o.hour, o.key))


def encode_rows(rows: list[dict]) -> bytes:
    """JSONL, one compact row per line (UTF-8)."""
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows).encode("utf-8")


def read_rows(store, key: str) -> list[dict]:
    """The rows of one object (a line that is not a JSON object is an error: objects are never partial)."""
    rows = []
    for i, line in enumerate(store.get_object(key).decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise InputError(f"{key}: line {i} is not a JSON object")
        rows.append(row)
    return rows


def feedback_labels(store, *, since: dt.datetime | None = None) -> dict[str, str]:
    """request id -> true label from the feedback written since ``since`` (the newest one wins)."""
    latest: dict[str, tuple[str, str]] = {}
    for obj in list_captures(store, since=since, feedback=True):
        for row in read_rows(store, obj.key):
            rid, label, ts = row.get("request_id"), row.get("label"), str(row.get("ts") or "")
            if isinstance(rid, str) and isinstance(label, str) and (rid not in latest or ts >= latest[rid][0]):
                latest[rid] = (ts, label)
    return {rid: label for rid, (_ts, label) in latest.items()}


def expired(objects: list[CaptureObject], retention_days: float, now: dt.datetime) -> list[CaptureObject]:
    """The objects whose whole hour is older than ``retention_days`` days before ``now``."""
    cutoff = now - dt.timedelta(days=retention_days)
    return [o for o in objects if o.hour_end <= cutoff]


__all__ = ["FEEDBACK_DIR", "PREFIX", "REQUEST_ID_RE", "CaptureObject", "encode_rows", "expired", "feedback_key",
           "feedback_labels", "list_captures", "parse_key", "read_rows", "rows_key"]

"""Drift data from captured serving traffic (``--data captured[:SINCE]``; promptreg.registry.captures).

Which rows: for ``NAME@ALIAS`` the rows requested through that alias, whatever version answered them
(every version behind the alias in the window); for ``NAME:VERSION`` every row that version answered;
for ``NAME`` every row of the prompt. Which window: ``captured:SINCE`` with SINCE a duration (``30m``,
``24h``, ``7d``) or an ISO date/time (UTC); plain ``captured`` is the last 24 hours for ``promptreg
drift`` and, in a schedule, the time since the window of the schedule's last successful run ended (its
first run: the last 24 hours), so consecutive runs read consecutive traffic, each row once. The window
ends when the check reads the captures (recorded in the report: ``window.until``).

Labels: the true labels posted to ``/feedback`` (newest per request id) are joined by request id;
the rows without feedback stay unlabelled (the check measures performance on the labelled rows and
tests the data drift on all of them). Rows come back in capture order (by ``ts``; rows of one instant
in their order in the object, i.e. arrival), as ``{"text", ("label")}``, so the fingerprint depends on
the traffic only.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promptreg.errors import InputError
from promptreg.refs import parse_ref

if TYPE_CHECKING:
    from promptreg.services.registry import Registry

CAPTURED = "captured"
DEFAULT_WINDOW = dt.timedelta(hours=24)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def is_captured(uri: str) -> bool:
    return uri == CAPTURED or uri.startswith(CAPTURED + ":")


def parse_since(uri: str, now: dt.datetime) -> dt.datetime | None:
    """The window start ``captured:SINCE`` names (None for plain ``captured``)."""
    spec = uri.removeprefix(CAPTURED).removeprefix(":").strip()
    if not spec:
        return None
    m = _DURATION.fullmatch(spec)
    if m:
        return now - dt.timedelta(**{_UNITS[m[2]]: float(m[1])})
    try:
        at = dt.datetime.fromisoformat(spec)
    except ValueError:
        raise InputError(f"--data {uri}: after 'captured:' give a duration (30m, 24h, 7d) or an ISO date/time "
                         "(UTC)") from None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


@dataclass
class CapturedData:
    rows: list[dict]
    since: dt.datetime
    until: dt.datetime
    objects: int
    versions: list[int]

    @property
    def labelled(self) -> int:
        return sum("label" in r for r in self.rows)

    def window(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "objects": self.objects,
                "versions": self.versions}


def read_captured(registry: Registry, ref: str, uri: str, *, since: dt.datetime | None = None,
                  until: dt.datetime | None = None) -> CapturedData:
    """The captured rows of ``ref`` in [since, until) with their feedback labels (see the module docstring);
    ``since`` (a schedule's last run) is used when the URI names no window of its own."""
    from promptreg.registry.captures import feedback_labels, list_captures, read_rows

    now = dt.datetime.now(dt.UTC)
    until = until or now
    since = parse_since(uri, now) or since or (until - DEFAULT_WINDOW)
    since = since if since.tzinfo else since.replace(tzinfo=dt.UTC)
    r = parse_ref(ref)
    store = registry.store
    versions = {r.version} if r.version is not None else None
    objects = list_captures(store, r.name, versions=versions, since=since, until=until)
    rows, seen_versions = [], set()
    for obj in objects:
        for row in read_rows(store, obj.key):
            ts = _utc(row.get("ts"))
            if ts is None or not since <= ts < until or not isinstance(row.get("text"), str):
                continue
            if r.alias is not None and row.get("ref") != ref:
                continue
            rows.append((ts, str(row.get("request_id") or ""), row["text"]))
            seen_versions.add(obj.version)
    if not rows:
        raise InputError(f"no captured traffic of {ref} between {since.isoformat()} and {until.isoformat()} "
                         "(serve --capture-rate, or widen the window: --data captured:7d)")
    rows.sort(key=lambda t: t[0])   # stable: rows of one instant keep their order in the object (arrival)
    labels = feedback_labels(store, since=since)
    out = [{"text": text, **({"label": labels[rid]} if rid in labels else {})} for _ts, rid, text in rows]
    return CapturedData(out, since, until, len(objects), sorted(seen_versions))


def _utc(value: Any) -> dt.datetime | None:
    """A row's ``ts`` as an aware UTC time (None when it is not a time)."""
    if not isinstance(value, str):
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return at.astimezone(dt.UTC) if at.tzinfo else at.replace(tzinfo=dt.UTC)


__all__ = ["CAPTURED", "DEFAULT_WINDOW", "CapturedData", "is_captured", "parse_since", "read_captured"]

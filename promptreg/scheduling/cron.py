"""Five-field cron expressions, evaluated in UTC (no dependency, no time zones, no DST).

``minute hour day-of-month month day-of-week`` with ``*``, lists (``1,15``), ranges (``1-5``), steps
(``*/15``, ``0-30/10``, ``5/20`` = ``5-59/20``), month names ``jan``-``dec`` and day names
``sun``-``sat`` (case-insensitive; day of week 0 and 7 are both Sunday), plus the shorthands
``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily`` ``@midnight`` ``@hourly``.

Day matching follows Vixie cron (and POSIX): when both day-of-month and day-of-week are restricted
(neither starts with ``*``) a day matches if EITHER matches; otherwise both must match.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

from promptreg.errors import InputError

MONTHS = {n: i for i, n in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
WEEKDAYS = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: (name, lowest, highest, names)
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, WEEKDAYS),
)
#: Search horizon: every valid expression fires within 28 years (the calendar's weekday cycle).
_MAX_DAYS = 366 * 30
_MINUTE = dt.timedelta(minutes=1)
_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class CronExpr:
    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    dom_star: bool
    dow_star: bool

    def __str__(self) -> str:
        return self.text

    def day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow

    def matches(self, moment: dt.datetime) -> bool:
        """Whether the expression fires at ``moment``'s minute (UTC)."""
        m = utc(moment)
        return m.minute in self.minutes and m.hour in self.hours and self.day_matches(m.date())


def _invalid(text: str, reason: str) -> InputError:
    return InputError(f"invalid cron expression {text!r}: {reason}")


def _value(token: str, field: str, lo: int, hi: int, names: dict[str, int] | None, text: str) -> int:
    low = token.lower()
    if names and low in names:
        return names[low]
    if not token.isascii() or not token.isdigit():
        hint = f" or a name {list(names)[0]}-{list(names)[-1]}" if names else ""
        raise _invalid(text, f"{field} {token!r} is not a number from {lo} to {hi}{hint}")
    value = int(token)
    if not lo <= value <= hi:
        raise _invalid(text, f"{field} {value} is out of range {lo}-{hi}")
    return value


def _parse_field(spec: str, field: str, lo: int, hi: int, names: dict[str, int] | None,
                 text: str) -> set[int]:
    values: set[int] = set()
    for item in spec.split(","):
        if not item:
            raise _invalid(text, f"empty item in {field} {spec!r}")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isascii() or not step_text.isdigit() or int(step_text) < 1:
                raise _invalid(text, f"step {step_text!r} in {field} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, _dash, b = base.partition("-")
            start = _value(a, field, lo, hi, names, text)
            end = _value(b, field, lo, hi, names, text)
            if start > end:
                raise _invalid(text, f"{field} range {base!r} goes backwards")
        else:
            start = _value(base, field, lo, hi, names, text)
            end = hi if slash else start  # "5/20" means 5-max/20
        values.update(range(start, end + 1, step))
    return values


@lru_cache(maxsize=256)
def parse_cron(text: str) -> CronExpr:
    """Parse a cron expression (InputError, one line, when malformed or when it can never fire)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("empty cron expression: expected 5 fields 'minute hour day-of-month month day-of-week'")
    source = " ".join(text.split())
    fields_text = SHORTHANDS.get(source.lower(), source)
    if fields_text.startswith("@"):
        raise _invalid(text, f"unknown shorthand (use one of {', '.join(SHORTHANDS)})")
    parts = fields_text.split()
    if len(parts) != 5:
        raise _invalid(text, f"expected 5 fields 'minute hour day-of-month month day-of-week', got {len(parts)}")
    parsed = [_parse_field(p, name, lo, hi, names, text) for p, (name, lo, hi, names) in zip(parts, _FIELDS, strict=True)]
    minutes, hours, days, months, weekdays = parsed
    weekdays = {0 if d == 7 else d for d in weekdays}
    expr = CronExpr(text=source, minutes=tuple(sorted(minutes)), hours=tuple(sorted(hours)),
                    days=frozenset(days), months=frozenset(months), weekdays=frozenset(weekdays),
                    dom_star=parts[2].startswith("*"), dow_star=parts[4].startswith("*"))
    try:
        next_fire(expr, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    except InputError:
        raise _invalid(text, "it never fires (no such day)") from None
    return expr


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def utc(moment: dt.datetime | None = None) -> dt.datetime:
    """``moment`` as an aware UTC datetime (a naive one is taken to be UTC already); None: now."""
    if moment is None:
        return utcnow()
    if not isinstance(moment, dt.datetime):
        raise TypeError(f"expected a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def iso(moment: dt.datetime | None) -> str | None:
    """Seconds-precision ISO 8601 text; None stays None."""
    return moment.isoformat(timespec="seconds") if moment is not None else None


def _expr(cron: str | CronExpr) -> CronExpr:
    return cron if isinstance(cron, CronExpr) else parse_cron(cron)


def next_fire(cron: str | CronExpr, after: dt.datetime) -> dt.datetime:
    """The first fire time strictly after ``after`` (aware UTC; a naive ``after`` is taken as UTC)."""
    expr = _expr(cron)
    t = utc(after).replace(second=0, microsecond=0) + _MINUTE
    day, first = t.date(), True
    for _ in range(_MAX_DAYS):
        if expr.day_matches(day):
            for h in expr.hours:
                if first and h < t.hour:
                    continue
                for m in expr.minutes:
                    if first and h == t.hour and m < t.minute:
                        continue
                    return dt.datetime(day.year, day.month, day.day, h, m, tzinfo=dt.UTC)
        day, first = day + _DAY, False
    raise _invalid(expr.text, "it never fires (no such day)")


def prev_fire(cron: str | CronExpr, at: dt.datetime) -> dt.datetime:
    """The latest fire time at or before ``at`` (aware UTC; a naive ``at`` is taken as UTC)."""
    expr = _expr(cron)
    t = utc(at).replace(second=0, microsecond=0)
    day, first = t.date(), True
    for _ in range(_MAX_DAYS):
        if expr.day_matches(day):
            for h in reversed(expr.hours):
                if first and h > t.hour:
                    continue
                for m in reversed(expr.minutes):
                    if first and h == t.hour and m > t.minute:
                        continue
                    return dt.datetime(day.year, day.month, day.day, h, m, tzinfo=dt.UTC)
        day, first = day - _DAY, False
    raise _invalid(expr.text, "it never fires (no such day)")


__all__ = ["CronExpr", "iso", "next_fire", "parse_cron", "prev_fire", "utc", "utcnow"]

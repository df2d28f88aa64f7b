"""Queries on schedules and their runs (the statements behind ``promptreg.scheduling``'s claims).

Invariants: as in :mod:`promptreg.registry.queries.catalog`. The compare-and-swap updates return
whether they won (exactly one row changed); what a lost swap means is the caller's business.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from promptreg.errors import ScheduleNotFoundError
from promptreg.registry.models import DriftReport, Prompt, Schedule, ScheduleRun


def _free(now: dt.datetime):
    return sa.or_(Schedule.lease_until.is_(None), Schedule.lease_until < now)


# ----------------------------------------------------------------------------------------- schedules


def get_schedule(s: Session, schedule_id: int, *, lock: bool = False) -> Schedule:
    """One schedule (``lock``: FOR UPDATE on PostgreSQL, the order claims lock in)."""
    sched = s.get(Schedule, int(schedule_id), with_for_update=lock or None)
    if sched is None:
        raise ScheduleNotFoundError(f"no schedule {schedule_id}")
    return sched


def schedules(s: Session, prompt: Prompt | None = None) -> list[tuple[Schedule, str]]:
    """(schedule, prompt name) for every schedule (of ``prompt`` only, if given), oldest first."""
    q = sa.select(Schedule, Prompt.name).join(Prompt, Prompt.id == Schedule.prompt_id).order_by(Schedule.id)
    if prompt is not None:
        q = q.where(Prompt.id == prompt.id)
    return [(sched, name) for sched, name in s.execute(q).all()]


def schedule_on(s: Session, prompt: Prompt, alias: str, data_uri: str) -> int | None:
    """The id of the schedule checking ``prompt@alias`` on ``data_uri``, if there is one."""
    return s.execute(sa.select(Schedule.id).where(Schedule.prompt_id == prompt.id, Schedule.alias == alias,
                                                  Schedule.data_uri == data_uri)).scalar()


def add_schedule(s: Session, **fields: Any) -> Schedule:
    sched = Schedule(**fields)
    s.add(sched)
    s.flush()
    return sched


def delete_schedule(s: Session, sched: Schedule) -> None:
    """Delete a schedule and its runs (drift reports keep their schedule_run_id)."""
    s.execute(sa.delete(ScheduleRun).where(ScheduleRun.schedule_id == sched.id))
    s.execute(sa.delete(Schedule).where(Schedule.id == sched.id))


def last_status(s: Session, schedule_id: int) -> str | None:
    """The status of the schedule's newest slot."""
    return s.execute(sa.select(ScheduleRun.status).where(ScheduleRun.schedule_id == schedule_id)
                     .order_by(ScheduleRun.slot_at.desc()).limit(1)).scalar()


def claimable(s: Session, now: dt.datetime, exclude: Sequence[int] = ()) -> list[int]:
    """Enabled schedules with a free lease that are due or have an orphaned run, most overdue first."""
    orphan = sa.select(ScheduleRun.id).where(ScheduleRun.schedule_id == Schedule.id,
                                             ScheduleRun.status == "running").exists()
    q = (sa.select(Schedule.id)
         .where(Schedule.enabled.is_(True), _free(now), sa.or_(Schedule.next_run_at <= now, orphan))
         .order_by(Schedule.next_run_at, Schedule.id))
    if exclude:
        q = q.where(Schedule.id.not_in(list(exclude)))
    return list(s.execute(q).scalars())


def take_lease(s: Session, schedule_id: int, owner: str, now: dt.datetime, until: dt.datetime) -> bool:
    """Compare-and-swap: lease an enabled schedule whose lease is free (or expired)."""
    got = s.execute(sa.update(Schedule).where(Schedule.id == schedule_id, Schedule.enabled.is_(True), _free(now))
                    .values(lease_owner=owner, lease_until=until).execution_options(synchronize_session=False))
    return got.rowcount == 1


def renew_lease(s: Session, schedule_id: int, owner: str, until: dt.datetime) -> bool:
    res = s.execute(sa.update(Schedule).where(Schedule.id == schedule_id, Schedule.lease_owner == owner)
                    .values(lease_until=until).execution_options(synchronize_session=False))
    return res.rowcount == 1


def free_lease(s: Session, schedule_id: int, owner: str, *, last_run_at: dt.datetime | None = None) -> None:
    """Give the lease back if ``owner`` still holds it (and record ``last_run_at`` if given)."""
    values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
    if last_run_at is not None:
        values["last_run_at"] = last_run_at
    s.execute(sa.update(Schedule).where(Schedule.id == schedule_id, Schedule.lease_owner == owner)
              .values(**values).execution_options(synchronize_session=False))


def set_schedule(s: Session, schedule_id: int, **values: Any) -> None:
    """Set ``next_run_at`` / ``last_run_at`` of a schedule (under its lease)."""
    s.execute(sa.update(Schedule).where(Schedule.id == schedule_id).values(**values))


# ----------------------------------------------------------------------------------------- runs


def running_runs(s: Session, schedule_id: int) -> list[ScheduleRun]:
    """Runs still marked running (orphans when the lease is free), oldest slot first."""
    return list(s.execute(sa.select(ScheduleRun).where(ScheduleRun.schedule_id == schedule_id,
                                                       ScheduleRun.status == "running")
                          .order_by(ScheduleRun.slot_at)).scalars().all())


def run_for_slot(s: Session, schedule_id: int, slot: dt.datetime) -> int | None:
    return s.execute(sa.select(ScheduleRun.id).where(ScheduleRun.schedule_id == schedule_id,
                                                     ScheduleRun.slot_at == slot)).scalar()


def add_run(s: Session, **fields: Any) -> ScheduleRun:
    run = ScheduleRun(**fields)
    s.add(run)
    s.flush()
    return run


def update_running(s: Session, run_id: int, held_by: str, /, **values: Any) -> bool:
    """Compare-and-swap on a run still ``running`` under ``held_by`` (``values`` may set a new ``owner``)."""
    res = s.execute(sa.update(ScheduleRun)
                    .where(ScheduleRun.id == run_id, ScheduleRun.status == "running", ScheduleRun.owner == held_by)
                    .values(**values).execution_options(synchronize_session=False))
    return res.rowcount == 1


def runs(s: Session, schedule_id: int | None = None, limit: int = 100) -> list[ScheduleRun]:
    """The newest runs (of one schedule, if given), newest slot first."""
    q = sa.select(ScheduleRun).order_by(ScheduleRun.slot_at.desc(), ScheduleRun.id.desc()).limit(limit)
    if schedule_id is not None:
        q = q.where(ScheduleRun.schedule_id == schedule_id)
    return list(s.execute(q).scalars())


def last_window_end(s: Session, schedule_id: int, before_run_id: int) -> dt.datetime | None:
    """Where the data window of the newest successful run of a schedule (before run ``before_run_id``)
    ended: its drift report's ``statistics.data.window.until``, else when that run started; None when
    the schedule has no successful run yet."""
    row = s.execute(sa.select(ScheduleRun.started_at, DriftReport.statistics)
                    .join(DriftReport, DriftReport.schedule_run_id == ScheduleRun.id, isouter=True)
                    .where(ScheduleRun.schedule_id == schedule_id, ScheduleRun.status == "ok",
                           ScheduleRun.id != before_run_id)
                    .order_by(ScheduleRun.slot_at.desc(), ScheduleRun.id.desc()).limit(1)).first()
    if row is None:
        return None
    started, stats = row
    until = (((stats or {}).get("data") or {}).get("window") or {}).get("until")
    if isinstance(until, str):
        try:
            return dt.datetime.fromisoformat(until)
        except ValueError:
            pass
    return started


__all__ = [
    "add_run",
    "add_schedule",
    "claimable",
    "delete_schedule",
    "free_lease",
    "get_schedule",
    "last_window_end",
    "last_status",
    "renew_lease",
    "run_for_slot",
    "running_runs",
    "runs",
    "schedule_on",
    "schedules",
    "set_schedule",
    "take_lease",
    "update_running",
]

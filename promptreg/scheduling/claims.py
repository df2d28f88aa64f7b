"""Claims: every due slot of a schedule runs exactly once, on as many machines at once as you like.

``run_due`` is what cron, a systemd timer, a Kubernetes CronJob or a GitHub Actions schedule calls, on
as many machines at once as you like; ``Scheduler`` runs the same loop as a long-lived process.

Exactly once, per slot
----------------------
A *slot* is one fire time of a schedule's cron expression. When a schedule is due
(``next_run_at <= now``), the claim runs in ONE transaction:

1. compare-and-swap on the schedule's lease:
   ``UPDATE schedule SET lease_owner=me, lease_until=now+lease WHERE id=? AND enabled AND
   (lease_until IS NULL OR lease_until < now)``; 0 rows -> another process holds it, skip. (On
   PostgreSQL the row lock makes a concurrent claimer wait and then re-check the lease; on SQLite
   every transaction is BEGIN IMMEDIATE.)
2. the slot is the LATEST fire time <= now, and ``next_run_at`` moves to the first fire time after
   now: a machine that was down for a week runs ONE check when it comes back, not one per missed
   slot;
3. a ``schedule_run`` row (status ``running``) is inserted; UNIQUE (schedule_id, slot_at) means a
   slot can never get a second row, whatever the clocks or leases do.

While the check runs, a heartbeat thread extends the lease (every lease/3), so a slow check is not
taken over. ``complete`` marks the run ``ok`` or ``failed`` (final, never run again) and frees the
lease, with a compare-and-swap on the run's owner.

A process that dies during a check leaves its run ``running`` with a lease that expires (a clean
interruption, see ``GracefulStop``, frees the lease at once). The next claim of that schedule finds
the orphaned run and:

- if a drift_report already points at it (``drift_report.schedule_run_id``: the check committed
  its report but the process died before marking the run), marks it ``ok`` with that report: the
  check is NOT run again;
- else, if the schedule is due again (a newer slot has come), marks it ``abandoned`` (final) and
  runs the newer slot instead: missed slots coalesce into one run;
- else, if it was already tried ``MAX_ATTEMPTS`` times, marks it ``abandoned`` (final);
- else retries THE SAME ROW: ``UPDATE schedule_run SET owner=me, attempts=attempts+1 WHERE id=? AND
  status='running' AND owner=<dead owner>`` (compare-and-swap, under the schedule lease).

So at most one process runs a slot at any time, a finished slot (ok/failed/abandoned) is never run
again, and an interrupted check that wrote nothing is retried once its lease is free. A check that
must not be repeated after a crash writes its result atomically (one transaction) at the end,
tagged with ``claim.run_id``.

Run statuses: ``running`` (claimed; or orphaned, awaiting retry, when its lease is free), ``ok``,
``failed`` (the check raised; ``error`` holds its one-line message), ``abandoned`` (interrupted and
superseded by a newer slot or given up).

Times are UTC; machines running ``run-due`` need roughly synchronised clocks (NTP): the lease
(default 600 s) must be much longer than the clock skew.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from promptreg.errors import InputError, one_line
from promptreg.registry import queries as q
from promptreg.scheduling.cron import iso, next_fire, parse_cron, prev_fire, utc

if TYPE_CHECKING:
    from promptreg.services.registry import Registry

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 600
#: Interrupted attempts of one slot before it is given up (``abandoned``).
MAX_ATTEMPTS = 3
RUN_STATUSES = ("running", "ok", "failed", "abandoned")


def default_owner() -> str:
    """``host:pid:random``: identifies one process in leases and runs."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Claim:
    """One claimed slot of one schedule: what a check function receives.

    ``run_id`` identifies the schedule_run row; a check that writes a drift_report should store it in
    ``drift_report.schedule_run_id`` in the same transaction (then a crash after the report is never
    re-run)."""

    schedule_id: int
    run_id: int
    owner: str
    slot_at: dt.datetime
    name: str
    alias: str
    cron: str
    data_uri: str
    suite_path: str | None
    policy: dict[str, Any]
    attempt: int
    lease_until: dt.datetime

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.alias}"


class _NothingToClaim(Exception):
    """Roll the claim transaction back (the lease CAS included)."""


def _candidates(registry: Registry, now: dt.datetime, exclude: Sequence[int]) -> list[int]:
    with registry.session() as s:
        return q.claimable(s, now, exclude)


def _settle_orphans(s, schedule_id: int, owner: str, now: dt.datetime, due: bool):
    """Decide each run a dead process left ``running`` (we hold the lease, so its holder's is gone):
    ``ok`` when its report was written, ``abandoned`` when superseded or tried too often, else retried
    (at most one). Returns (the run to retry or None, its attempt number)."""
    run, attempt = None, 1
    for orphan in q.running_runs(s, schedule_id):
        # Never run a slot whose report was written; retry it at most once at a time.
        report_id = q.drift_report_of_run(s, orphan.id)
        if report_id is not None:
            values = {"status": "ok", "finished_at": now, "drift_report_id": report_id, "error": None}
            log.info("schedule %s slot %s: report %s was written before its process stopped: "
                     "marked ok", schedule_id, iso(orphan.slot_at), report_id)
            q.set_schedule(s, schedule_id, last_run_at=now)
        elif due or run is not None or orphan.attempts >= MAX_ATTEMPTS:
            why = ("superseded by a newer due slot" if due or run is not None
                   else f"interrupted {orphan.attempts} times, given up")
            values = {"status": "abandoned", "finished_at": now,
                      "error": one_line(f"{orphan.error + '; ' if orphan.error else ''}{why}", 500)}
        else:
            attempt = orphan.attempts + 1
            values = {"owner": owner, "attempts": attempt, "started_at": now, "finished_at": None}
            run = orphan
            log.info("schedule %s: retrying interrupted slot %s (attempt %s)", schedule_id,
                     iso(orphan.slot_at), attempt)
        if not q.update_running(s, orphan.id, orphan.owner, **values):  # cannot happen under the lease
            raise _NothingToClaim
    return run, attempt


def _claim_one(registry: Registry, schedule_id: int, owner: str, now: dt.datetime, lease_s: float) -> Claim | None:
    lease_until = now + dt.timedelta(seconds=lease_s)
    try:
        with registry.session() as s:
            if not q.take_lease(s, schedule_id, owner, now, lease_until):
                raise _NothingToClaim  # another process holds it (or it was removed/disabled)
            sched = q.get_schedule(s, schedule_id)
            expr = parse_cron(sched.cron)
            due = sched.next_run_at <= now
            run, attempt = _settle_orphans(s, schedule_id, owner, now, due)
            if run is None and due:
                slot = prev_fire(expr, now)
                q.set_schedule(s, schedule_id, next_run_at=next_fire(expr, now))
                if q.run_for_slot(s, schedule_id, slot) is None:
                    run = q.add_run(s, schedule_id=schedule_id, slot_at=slot, started_at=now, status="running",
                                    owner=owner, attempts=1)
            if run is None:
                # nothing to run (orphans settled, or the slot already has its run): free the lease
                q.free_lease(s, schedule_id, owner)
                return None
            return Claim(schedule_id=schedule_id, run_id=run.id, owner=owner, slot_at=utc(run.slot_at),
                         name=q.prompt_by_id(s, sched.prompt_id).name, alias=sched.alias, cron=sched.cron,
                         data_uri=sched.data_uri, suite_path=sched.suite_path, policy=dict(sched.policy or {}),
                         attempt=attempt, lease_until=lease_until)
    except _NothingToClaim:
        return None
    except q.DuplicateRowError:
        # the slot's row appeared concurrently (cannot happen under the lease): someone else has it
        log.warning("schedule %s: slot claimed concurrently", schedule_id)
        return None


def claim_due(registry: Registry, owner: str | None = None, now: dt.datetime | None = None,
              lease_s: float = DEFAULT_LEASE_S, limit: int | None = None,
              exclude: Sequence[int] = ()) -> list[Claim]:
    """Claim due slots (at most ``limit``), one transaction per schedule; see the module docstring."""
    owner = owner or default_owner()
    if len(owner) > 128:
        raise InputError("owner is longer than 128 characters")
    now = utc(now)
    claims: list[Claim] = []
    for schedule_id in _candidates(registry, now, exclude):
        if limit is not None and len(claims) >= limit:
            break
        claim = _claim_one(registry, schedule_id, owner, now, lease_s)
        if claim is not None:
            claims.append(claim)
    return claims


def renew_lease(registry: Registry, claim: Claim, lease_s: float = DEFAULT_LEASE_S, now: dt.datetime | None = None) -> bool:
    """Extend the claim's lease; False when it is no longer ours."""
    with registry.session() as s:
        return q.renew_lease(s, claim.schedule_id, claim.owner, utc(now) + dt.timedelta(seconds=lease_s))


class _Lost(Exception):
    pass


def complete(registry: Registry, claim: Claim, status: str, error: str | None = None, drift_report_id: int | None = None,
             now: dt.datetime | None = None) -> bool:
    """Finish the claimed run (``ok``, ``failed`` or ``abandoned``), set ``last_run_at``, free the lease.

    False (and nothing changed) when the run is no longer this claim's: another process took the slot
    over after this one's lease expired, or the schedule was removed."""
    if status not in ("ok", "failed", "abandoned"):
        raise InputError(f"invalid run status {status!r}: expected ok, failed or abandoned")
    now = utc(now)
    try:
        with registry.session() as s:
            # lock order: schedule row, then run row (as in the claim), so the two never deadlock
            q.free_lease(s, claim.schedule_id, claim.owner, last_run_at=now)
            if not q.update_running(s, claim.run_id, claim.owner, status=status, finished_at=now,
                                    error=one_line(error, 500) if error else None, drift_report_id=drift_report_id):
                raise _Lost
    except _Lost:
        return False
    return True


def release(registry: Registry, claim: Claim, reason: str) -> bool:
    """Give an unfinished claim back: the run stays ``running`` with ``error=reason`` and the lease is
    freed, so the next ``run_due`` retries the slot at once (instead of after the lease expires)."""
    with registry.session() as s:
        q.free_lease(s, claim.schedule_id, claim.owner)
        return q.update_running(s, claim.run_id, claim.owner, error=one_line(reason, 500))

"""Scheduled drift checks: schedules live in the registry database; every due slot runs exactly once.

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
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from promptreg.errors import (
    ConflictError,
    InputError,
    PromptregError,
)
from promptreg.refs import check_text, parse_ref
from promptreg.registry import queries as q
from promptreg.scheduling.cron import next_fire, parse_cron, prev_fire

if TYPE_CHECKING:
    from promptreg.services.registry import Registry

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 600
#: Seconds a check may still run after SIGTERM/SIGINT before it is interrupted (Kubernetes waits 30 s).
DEFAULT_GRACE_S = 20.0
#: Interrupted attempts of one slot before it is given up (``abandoned``).
MAX_ATTEMPTS = 3
RUN_STATUSES = ("running", "ok", "failed", "abandoned")
EXPORT_FORMATS = ("crontab", "k8s", "github")

CheckFn = Callable[["Claim"], Any]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(moment: dt.datetime | None) -> dt.datetime:
    if moment is None:
        return _utcnow()
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def default_owner() -> str:
    """``host:pid:random``: identifies one process in leases and runs."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def one_line(exc: BaseException | str, limit: int = 500) -> str:
    """An exception as one line (promptreg errors as they are, others prefixed by their type)."""
    if isinstance(exc, str):
        text = exc
    else:
        msg = str(exc).strip()
        first = msg.splitlines()[0].strip() if msg else ""
        text = first if isinstance(exc, PromptregError) else f"{type(exc).__name__}: {first}".rstrip(": ")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# result objects


@dataclass
class ScheduleInfo:
    id: int
    name: str
    alias: str
    cron: str
    data_uri: str
    suite_path: str | None
    policy: dict[str, Any]
    enabled: bool
    next_run_at: str | None
    last_run_at: str | None
    last_status: str | None
    lease_owner: str | None
    lease_until: str | None
    created_by: str
    created_at: str | None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.alias}"

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, **asdict(self)}


@dataclass
class ScheduleRunInfo:
    """One slot of a schedule and what became of it (see promptreg.services.schedule)."""

    id: int
    schedule_id: int
    slot_at: str | None
    status: str  # running | ok | failed | abandoned
    owner: str | None
    attempts: int
    started_at: str | None
    finished_at: str | None
    error: str | None
    drift_report_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


@dataclass
class RunResult:
    schedule_id: int
    run_id: int
    ref: str
    slot_at: str
    status: str  # ok | failed | interrupted (retried later) | lost (another process took the slot over)
    attempt: int
    error: str | None = None
    drift_report_id: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# add / list / remove


def _check_policy(policy: Any) -> dict[str, Any]:
    if policy is None:
        return {}
    if not isinstance(policy, dict):
        raise InputError(f"policy must be a JSON object, got {type(policy).__name__}")
    try:
        json.dumps(policy)
    except (TypeError, ValueError) as exc:
        raise InputError(f"policy is not JSON-serialisable: {exc}") from None
    return dict(policy)


def _info(s, sched, prompt_name: str) -> ScheduleInfo:
    return ScheduleInfo(
        id=sched.id, name=prompt_name, alias=sched.alias, cron=sched.cron, data_uri=sched.data_uri,
        suite_path=sched.suite_path, policy=dict(sched.policy or {}), enabled=bool(sched.enabled),
        next_run_at=_iso(sched.next_run_at), last_run_at=_iso(sched.last_run_at),
        last_status=q.last_status(s, sched.id), lease_owner=sched.lease_owner, lease_until=_iso(sched.lease_until),
        created_by=sched.created_by, created_at=_iso(sched.created_at),
    )


def add_schedule(registry: Registry, ref: str, cron: str, data_uri: str, suite_path: str | None = None,
                 policy: dict[str, Any] | None = None, now: dt.datetime | None = None) -> ScheduleInfo:
    """Schedule a drift check of ``NAME@ALIAS`` on ``data_uri`` at every fire time of ``cron`` (UTC).

    The first run is the first fire time after ``now``. Paths and URIs are stored as given: they are
    read on the machine that runs the check."""
    r = parse_ref(ref)
    if r.alias is None:
        raise InputError(f"a schedule checks NAME@ALIAS (the version an alias points at), got {ref!r}")
    expr = parse_cron(cron)
    if len(expr.text) > 128:
        raise InputError("cron expression is longer than 128 characters")
    if not isinstance(data_uri, str) or not data_uri.strip():
        raise InputError("--data needs a file path or URI of the fresh data")
    data_uri = check_text(data_uri.strip(), "data URI")
    if suite_path is not None:
        suite_path = check_text(str(suite_path).strip(), "suite path") or None
    policy = _check_policy(policy)
    now = _utc(now)
    user = registry.settings.user
    try:
        with registry.session() as s:
            prompt = q.get_prompt(s, r.name)
            q.alias_target(s, prompt, r.alias)  # the alias must be set
            dup = q.schedule_on(s, prompt, r.alias, data_uri)
            if dup is not None:
                raise ConflictError(f"schedule {dup} already checks {r.name}@{r.alias} on {data_uri}")
            sched = q.add_schedule(s, prompt_id=prompt.id, alias=r.alias, cron=expr.text, data_uri=data_uri,
                                   suite_path=suite_path, policy=policy, enabled=True,
                                   next_run_at=next_fire(expr, now), created_by=user, created_at=now)
            q.add_event(s, at=now, actor=user, action="schedule.add", prompt_id=prompt.id, alias=r.alias,
                        details={"schedule_id": sched.id, "cron": expr.text, "data_uri": data_uri,
                                 "suite_path": suite_path, "policy": policy})
            return _info(s, sched, prompt.name)
    except q.DuplicateRowError:
        raise ConflictError(f"a schedule of {r.name}@{r.alias} on {data_uri} was added concurrently") from None


def list_schedules(registry: Registry, name: str | None = None) -> list[ScheduleInfo]:
    """Every schedule (of prompt ``name`` only, if given), oldest first."""
    with registry.session() as s:
        prompt = q.get_prompt(s, name) if name is not None else None
        return [_info(s, sched, pname) for sched, pname in q.schedules(s, prompt)]


def get_schedule(registry: Registry, schedule_id: int) -> ScheduleInfo:
    with registry.session() as s:
        sched = q.get_schedule(s, schedule_id)
        return _info(s, sched, q.prompt_by_id(s, sched.prompt_id).name)


def remove_schedule(registry: Registry, schedule_id: int) -> ScheduleInfo:
    """Delete a schedule and its run history (drift reports stay). A check already running finishes
    but is not recorded as a run."""
    with registry.session() as s:
        # lock the schedule row first (PostgreSQL), like claims do, so the two never deadlock
        sched = q.get_schedule(s, schedule_id, lock=True)
        info = _info(s, sched, q.prompt_by_id(s, sched.prompt_id).name)
        q.delete_schedule(s, sched)
        q.add_event(s, at=_utcnow(), actor=registry.settings.user, action="schedule.remove",
                    prompt_id=sched.prompt_id, alias=sched.alias,
                    details={"schedule_id": sched.id, "cron": sched.cron, "data_uri": sched.data_uri})
    return info


def list_runs(registry: Registry, schedule_id: int | None = None, limit: int = 100) -> list[ScheduleRunInfo]:
    """The newest schedule runs (of one schedule, if given), newest slot first."""
    with registry.session() as s:
        return [ScheduleRunInfo(id=r.id, schedule_id=r.schedule_id, slot_at=_iso(r.slot_at), status=r.status,
                                owner=r.owner, attempts=r.attempts, started_at=_iso(r.started_at),
                                finished_at=_iso(r.finished_at), error=r.error, drift_report_id=r.drift_report_id)
                for r in q.runs(s, schedule_id, limit)]


# --------------------------------------------------------------------------------------------------
# claim / complete


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
                     "marked ok", schedule_id, _iso(orphan.slot_at), report_id)
            q.set_schedule(s, schedule_id, last_run_at=now)
        elif due or run is not None or orphan.attempts >= MAX_ATTEMPTS:
            why = ("superseded by a newer due slot" if due or run is not None
                   else f"interrupted {orphan.attempts} times, given up")
            values = {"status": "abandoned", "finished_at": now,
                      "error": one_line(f"{orphan.error + '; ' if orphan.error else ''}{why}")}
        else:
            attempt = orphan.attempts + 1
            values = {"owner": owner, "attempts": attempt, "started_at": now, "finished_at": None}
            run = orphan
            log.info("schedule %s: retrying interrupted slot %s (attempt %s)", schedule_id,
                     _iso(orphan.slot_at), attempt)
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
            return Claim(schedule_id=schedule_id, run_id=run.id, owner=owner, slot_at=_utc(run.slot_at),
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
    now = _utc(now)
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
        return q.renew_lease(s, claim.schedule_id, claim.owner, _utc(now) + dt.timedelta(seconds=lease_s))


class _Lost(Exception):
    pass


def complete(registry: Registry, claim: Claim, status: str, error: str | None = None, drift_report_id: int | None = None,
             now: dt.datetime | None = None) -> bool:
    """Finish the claimed run (``ok``, ``failed`` or ``abandoned``), set ``last_run_at``, free the lease.

    False (and nothing changed) when the run is no longer this claim's: another process took the slot
    over after this one's lease expired, or the schedule was removed."""
    if status not in ("ok", "failed", "abandoned"):
        raise InputError(f"invalid run status {status!r}: expected ok, failed or abandoned")
    now = _utc(now)
    try:
        with registry.session() as s:
            # lock order: schedule row, then run row (as in the claim), so the two never deadlock
            q.free_lease(s, claim.schedule_id, claim.owner, last_run_at=now)
            if not q.update_running(s, claim.run_id, claim.owner, status=status, finished_at=now,
                                    error=one_line(error) if error else None, drift_report_id=drift_report_id):
                raise _Lost
    except _Lost:
        return False
    return True


def release(registry: Registry, claim: Claim, reason: str) -> bool:
    """Give an unfinished claim back: the run stays ``running`` with ``error=reason`` and the lease is
    freed, so the next ``run_due`` retries the slot at once (instead of after the lease expires)."""
    with registry.session() as s:
        q.free_lease(s, claim.schedule_id, claim.owner)
        return q.update_running(s, claim.run_id, claim.owner, error=one_line(reason))


# --------------------------------------------------------------------------------------------------
# signals


class CheckInterrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt: not caught by `except Exception`
    """Raised inside a running check when a stop signal's grace period is over (or at a second signal)."""


class GracefulStop:
    """SIGTERM/SIGINT handling for ``run_due``/``Scheduler`` (main thread only).

    The first signal sets ``stop``: no new check starts, and the running one gets ``grace_s`` more
    seconds to finish; when they are over, or at a second signal, ``CheckInterrupted`` is raised inside
    the check. Its transaction (if any) rolls back, so it leaves no half-written report, and the
    claim is released for a retry."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, grace_s: float = DEFAULT_GRACE_S):
        self.grace_s = float(grace_s)
        self.stop = threading.Event()
        self.signal_name: str | None = None
        self._signals = 0
        self._in_check = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (*self.SIGNALS, signal.SIGALRM):
                self._old[sig] = signal.getsignal(sig)
            for sig in self.SIGNALS:
                signal.signal(sig, self._on_signal)
            signal.signal(signal.SIGALRM, self._on_alarm)
        return self

    def __exit__(self, *exc) -> None:
        if self._old:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for sig, handler in self._old.items():
                signal.signal(sig, handler)
            self._old.clear()

    def _on_signal(self, signum, _frame) -> None:
        self._signals += 1
        self.signal_name = self.signal_name or signal.Signals(signum).name
        self.stop.set()
        if not self._in_check:
            return
        if self._signals > 1 or self.grace_s <= 0:
            raise CheckInterrupted(f"{signal.Signals(signum).name} during the check")
        if self._old:
            signal.setitimer(signal.ITIMER_REAL, self.grace_s)

    def _on_alarm(self, _signum, _frame) -> None:
        if self._in_check:
            raise CheckInterrupted(f"{self.signal_name}: the check did not finish within {self.grace_s:g} s")

    @contextmanager
    def checking(self) -> Iterator[None]:
        if self.stop.is_set():
            raise CheckInterrupted(f"{self.signal_name} before the check started")
        self._in_check = True
        try:
            yield
        finally:
            self._in_check = False
            if self._old:
                signal.setitimer(signal.ITIMER_REAL, 0)


# --------------------------------------------------------------------------------------------------
# run


class _Heartbeat(threading.Thread):
    def __init__(self, registry: Registry, claim: Claim, lease_s: float, clock: Callable[[], dt.datetime]):
        super().__init__(name=f"promptreg-lease-{claim.schedule_id}", daemon=True)
        self.registry, self.claim, self.lease_s, self.clock = registry, claim, lease_s, clock
        self.interval = max(0.05, lease_s / 3)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                if not renew_lease(self.registry, self.claim, self.lease_s, self.clock()):
                    log.warning("schedule %s: lease lost during the check", self.claim.schedule_id)
                    return
            except Exception as exc:  # noqa: BLE001 - keep trying until the lease expires
                log.warning("schedule %s: cannot renew the lease: %s", self.claim.schedule_id, one_line(exc))

    def halt(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def _clock(now: dt.datetime | None) -> Callable[[], dt.datetime]:
    if now is None:
        return _utcnow
    base, t0 = _utc(now), time.monotonic()
    return lambda: base + dt.timedelta(seconds=time.monotonic() - t0)


def _report_id(out: Any) -> int | None:
    if out is None or isinstance(out, bool):
        return None
    if isinstance(out, int):
        return out
    if isinstance(out, dict):
        value = out.get("drift_report_id", out.get("id"))
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    for attr in ("drift_report_id", "id"):
        value = getattr(out, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _execute(registry: Registry, claim: Claim, check_fn: CheckFn, clock, lease_s: float,
             guard: GracefulStop | None) -> RunResult:
    result = RunResult(schedule_id=claim.schedule_id, run_id=claim.run_id, ref=claim.ref,
                       slot_at=_iso(claim.slot_at), status="ok", attempt=claim.attempt)
    heartbeat = _Heartbeat(registry, claim, lease_s, clock)
    heartbeat.start()
    t0 = time.monotonic()
    status, error, report_id = "ok", None, None
    try:
        if guard is not None:
            with guard.checking():
                out = check_fn(claim)
        else:
            out = check_fn(claim)
        report_id = _report_id(out)
    except CheckInterrupted as exc:
        heartbeat.halt()
        release(registry, claim, f"interrupted: {exc}")
        result.status, result.error = "interrupted", one_line(f"interrupted: {exc}")
        result.seconds = round(time.monotonic() - t0, 3)
        return result
    except Exception as exc:  # noqa: BLE001 - a failing check is recorded; the others still run
        status, error = "failed", one_line(exc)
    except BaseException:  # KeyboardInterrupt, SystemExit: give the slot back, then stop
        heartbeat.halt()
        try:
            release(registry, claim, "interrupted")
        finally:
            raise
    heartbeat.halt()
    result.seconds = round(time.monotonic() - t0, 3)
    if complete(registry, claim, status, error=error, drift_report_id=report_id, now=clock()):
        result.status, result.error, result.drift_report_id = status, error, report_id
    else:
        result.status, result.error = "lost", ("the slot is no longer this process's: its lease expired and "
                                                "another process took it over, or the schedule was removed")
    return result


def run_due(registry: Registry, check_fn: CheckFn, owner: str | None = None, now: dt.datetime | None = None,
            lease_s: float = DEFAULT_LEASE_S, guard: GracefulStop | None = None,
            on_result: Callable[[RunResult], None] | None = None) -> list[RunResult]:
    """Run every due check once: claim one slot, ``check_fn(claim)``, complete; repeat until nothing
    is due. A check that raises is recorded ``failed`` (one-line error) and the others still run. The
    check's return value may be the drift_report id (int, or an object/dict with ``drift_report_id``).

    ``now`` (tests): the clock starts there instead of the current time. ``guard``: stop handling
    (``GracefulStop``); after a stop signal no new check starts."""
    owner = owner or default_owner()
    clock = _clock(now)
    results: list[RunResult] = []
    seen: list[int] = []
    while guard is None or not guard.stop.is_set():
        claims = claim_due(registry, owner, now=clock(), lease_s=lease_s, limit=1, exclude=seen)
        if not claims:
            break
        claim = claims[0]
        seen.append(claim.schedule_id)
        result = _execute(registry, claim, check_fn, clock, lease_s, guard)
        results.append(result)
        if on_result is not None:
            on_result(result)
        if result.status == "interrupted":
            break
    return results


class Scheduler:
    """``run_due`` every ``poll_s`` seconds until SIGTERM/SIGINT (then exit 0; see ``GracefulStop``).

    Restarting is safe at any moment: every slot has one schedule_run row, so a finished slot is never
    run again and an interrupted one is retried by whichever process claims it next."""

    def __init__(self, registry: Registry, check_fn: CheckFn, poll_s: float = 30, owner: str | None = None,
                 lease_s: float = DEFAULT_LEASE_S, grace_s: float = DEFAULT_GRACE_S,
                 on_result: Callable[[RunResult], None] | None = None,
                 on_error: Callable[[PromptregError], None] | None = None):
        if poll_s <= 0:
            raise InputError("--poll-s must be positive")
        self.registry, self.check_fn = registry, check_fn
        self.poll_s, self.lease_s, self.grace_s = float(poll_s), float(lease_s), float(grace_s)
        self.owner = owner or default_owner()
        self.on_result, self.on_error = on_result, on_error
        self.guard: GracefulStop | None = None

    def run_forever(self) -> int:
        with GracefulStop(self.grace_s) as guard:
            self.guard = guard
            while not guard.stop.is_set():
                try:
                    run_due(self.registry, self.check_fn, owner=self.owner, lease_s=self.lease_s, guard=guard,
                            on_result=self.on_result)
                except PromptregError as exc:  # database unreachable for a moment: try again next poll
                    log.warning("run-due failed: %s", exc)
                    if self.on_error is not None:
                        self.on_error(exc)
                deadline = time.monotonic() + self.poll_s
                while not guard.stop.is_set() and time.monotonic() < deadline:
                    guard.stop.wait(min(0.5, max(0.0, deadline - time.monotonic())))
        return 0


# --------------------------------------------------------------------------------------------------
# export


@dataclass
class _Env:
    name: str
    value: str | None  # None: a secret
    secret_key: str = ""
    note: str = ""


def _is_remote(uri: str | None) -> bool:
    return bool(uri) and "://" in uri and not uri.startswith(("sqlite", "file:"))


def _env_plan(settings) -> list[_Env]:
    env = [_Env("PROMPTREG_DB_URL", None, "db-url", "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB")]
    for name, value in (("PROMPTREG_ARTIFACT_URI", settings.artifact_uri),
                        ("MLFLOW_TRACKING_URI", settings.tracking_uri),
                        ("MLFLOW_S3_ENDPOINT_URL", settings.s3_endpoint_url),
                        ("PROMPTREG_MLFLOW_ARTIFACT_URI", settings.mlflow_artifact_uri)):
        if value is None:
            continue
        if _is_remote(value):
            env.append(_Env(name, value))
        elif name in ("PROMPTREG_ARTIFACT_URI", "MLFLOW_TRACKING_URI"):
            env.append(_Env(name, f"CHANGE-ME (here: {value}, a local path other machines cannot see)"))
    if any(str(v or "").startswith("s3://") for v in (settings.artifact_uri, settings.mlflow_artifact_uri)):
        env.append(_Env("AWS_ACCESS_KEY_ID", None, "aws-access-key-id"))
        env.append(_Env("AWS_SECRET_ACCESS_KEY", None, "aws-secret-access-key"))
    if settings.base_model:
        env.append(_Env("PROMPTREG_BASE_MODEL", settings.base_model, note="the deployed base model folder"))
    env.append(_Env("PROMPTREG_USER", "promptreg-scheduler"))
    return env


def _yaml_str(value: str) -> str:
    return json.dumps(value)


def export_snippet(fmt: str, registry_settings, every: str = "*/5 * * * *", workdir: str = "/srv/app",
                   image: str = "ghcr.io/OWNER/promptreg:latest", name: str = "promptreg-run-due",
                   log_file: str = "/var/log/promptreg.log") -> str:
    """A ready-made snippet that calls ``promptreg schedule run-due`` every ``every`` (cron, UTC).

    ``fmt``: ``crontab`` (a crontab line), ``k8s`` (a Kubernetes CronJob) or ``github`` (a GitHub
    Actions workflow). Secrets (the database URL, S3 keys) are referenced, never written out."""
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r}: expected {', '.join(EXPORT_FORMATS)}")
    expr = parse_cron(every)
    env = _env_plan(registry_settings)
    if fmt == "crontab":
        lines = [
            f"# promptreg: run due drift checks ({expr.text}, UTC). Safe on several machines at once:",
            "# a database lease runs each due check exactly once. Settings come from",
            f"# {workdir}/promptreg.toml or the environment; cron's PATH is minimal, so give",
            "# the full path of promptreg (e.g. /srv/app/.venv/bin/promptreg) if it is not on it.",
            "# Environment the registry needs (export it, or put it in promptreg.toml):",
        ]
        for e in env:
            value = e.value if e.value is not None else f"<secret{': ' + e.note if e.note else ''}>"
            lines.append(f"#   {e.name}={value}")
        lines.append(f"{expr.text} cd {workdir} && promptreg schedule run-due >> {log_file} 2>&1")
        return "\n".join(lines) + "\n"
    if fmt == "k8s":
        env_lines = []
        for e in env:
            env_lines.append(f"                - name: {e.name}")
            if e.value is None:
                env_lines += ["                  valueFrom:", "                    secretKeyRef:",
                              "                      name: promptreg", f"                      key: {e.secret_key}"]
            else:
                env_lines.append(f"                  value: {_yaml_str(e.value)}")
        return "\n".join([
            f"# promptreg: run due drift checks ({expr.text}, UTC).",
            "# concurrencyPolicy Forbid is NOT needed: each due check is claimed through a database lease,",
            "# so overlapping jobs (or other machines) never run a check twice. The secret 'promptreg'",
            "# holds db-url (and the S3 keys).",
            "# kubectl create secret generic promptreg --from-literal=db-url='postgresql+psycopg://...'",
            "apiVersion: batch/v1",
            "kind: CronJob",
            "metadata:",
            f"  name: {name}",
            "spec:",
            f"  schedule: {_yaml_str(expr.text)}",
            '  timeZone: "Etc/UTC"',
            "  concurrencyPolicy: Allow",
            "  startingDeadlineSeconds: 600",
            "  successfulJobsHistoryLimit: 3",
            "  failedJobsHistoryLimit: 3",
            "  jobTemplate:",
            "    spec:",
            "      backoffLimit: 1",
            "      template:",
            "        spec:",
            "          restartPolicy: Never",
            f"          # SIGTERM lets the running check finish for up to {DEFAULT_GRACE_S:g} s, then it is",
            "          # interrupted cleanly and retried by the next run",
            "          terminationGracePeriodSeconds: 30",
            "          containers:",
            "            - name: run-due",
            f"              image: {image}",
            '              command: ["promptreg", "schedule", "run-due"]',
            "              env:",
            *env_lines,
        ]) + "\n"
    # github
    env_lines = []
    for e in env:
        value = f"${{{{ secrets.{e.name} }}}}" if e.value is None else _yaml_str(e.value)
        env_lines.append(f"      {e.name}: {value}")
    return "\n".join([
        "# .github/workflows/promptreg-drift.yml",
        f"# promptreg: run due drift checks ({expr.text}, UTC). GitHub may start scheduled runs late or",
        "# skip them when busy: a missed slot runs once at the next run. No `concurrency:` group is needed:",
        "# a database lease runs each due check exactly once. Secrets: Settings > Secrets and variables.",
        "name: promptreg scheduled drift checks",
        "on:",
        "  schedule:",
        f"    - cron: {_yaml_str(expr.text)}",
        "  workflow_dispatch: {}",
        "jobs:",
        "  run-due:",
        "    runs-on: ubuntu-latest",
        "    timeout-minutes: 60",
        "    env:",
        *env_lines,
        "    steps:",
        "      - uses: actions/checkout@v4",
        "      - uses: actions/setup-python@v5",
        "        with:",
        '          python-version: "3.12"',
        "      - run: pip install .",
        "      - run: promptreg schedule run-due",
    ]) + "\n"


__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_LEASE_S",
    "EXPORT_FORMATS",
    "MAX_ATTEMPTS",
    "RUN_STATUSES",
    "CheckInterrupted",
    "Claim",
    "GracefulStop",
    "RunResult",
    "ScheduleInfo",
    "Scheduler",
    "add_schedule",
    "claim_due",
    "complete",
    "default_owner",
    "export_snippet",
    "get_schedule",
    "list_runs",
    "list_schedules",
    "next_fire",
    "one_line",
    "parse_cron",
    "prev_fire",
    "release",
    "remove_schedule",
    "renew_lease",
    "run_due",
]

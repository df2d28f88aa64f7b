"""Schedules of recurring drift checks: add, list, get, remove, and their run history.

Schedules live in the registry database (times in UTC); a schedule checks ``NAME@ALIAS`` on a data URI
at every fire time of a five-field cron expression. How due slots are claimed and run exactly once is
:mod:`promptreg.scheduling.claims` and :mod:`promptreg.scheduling.runner`.

Invariants: every change is one transaction with its audit event; paths and URIs are stored as given
(they are read on the machine that runs the check).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from promptreg.errors import ConflictError, InputError
from promptreg.refs import check_text, parse_ref
from promptreg.registry import queries as q
from promptreg.scheduling.cron import iso, next_fire, parse_cron, utc, utcnow

if TYPE_CHECKING:
    from promptreg.services.registry import Registry


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
        next_run_at=iso(sched.next_run_at), last_run_at=iso(sched.last_run_at),
        last_status=q.last_status(s, sched.id), lease_owner=sched.lease_owner, lease_until=iso(sched.lease_until),
        created_by=sched.created_by, created_at=iso(sched.created_at),
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
    now = utc(now)
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
        q.add_event(s, at=utcnow(), actor=registry.settings.user, action="schedule.remove",
                    prompt_id=sched.prompt_id, alias=sched.alias,
                    details={"schedule_id": sched.id, "cron": sched.cron, "data_uri": sched.data_uri})
    return info


def list_runs(registry: Registry, schedule_id: int | None = None, limit: int = 100) -> list[ScheduleRunInfo]:
    """The newest schedule runs (of one schedule, if given), newest slot first."""
    with registry.session() as s:
        return [ScheduleRunInfo(id=r.id, schedule_id=r.schedule_id, slot_at=iso(r.slot_at), status=r.status,
                                owner=r.owner, attempts=r.attempts, started_at=iso(r.started_at),
                                finished_at=iso(r.finished_at), error=r.error, drift_report_id=r.drift_report_id)
                for r in q.runs(s, schedule_id, limit)]

"""Scheduling (issue 5): cron parser, schedules, exactly-once claims under concurrency and crashes,
graceful SIGTERM, migration 0003, export snippets and the CLI commands."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from promptreg import scheduling as sch
from promptreg.errors import ConflictError, InputError, NotFoundError
from promptreg.registry import migrate
from promptreg.registry.db import dispose_engines, make_engine
from promptreg.registry.models import (
    Alias,
    AuditEvent,
    DriftReport,
    Prompt,
    PromptVersion,
    Schedule,
    ScheduleRun,
)
from promptreg.scheduling.cron import next_fire, parse_cron, prev_fire

REPO = Path(__file__).resolve().parents[1]
UTC = dt.UTC


def T(*args) -> dt.datetime:  # noqa: N802 - reads like a literal
    return dt.datetime(*args, tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# cron


AT = T(2025, 3, 14, 10, 7, 30)  # a Friday

CRON_CASES = [
    # expression, next fire after AT, latest fire at or before AT
    ("* * * * *", T(2025, 3, 14, 10, 8), T(2025, 3, 14, 10, 7)),
    ("*/15 * * * *", T(2025, 3, 14, 10, 15), T(2025, 3, 14, 10, 0)),
    ("0 3 * * *", T(2025, 3, 15, 3, 0), T(2025, 3, 14, 3, 0)),
    ("0 9-17/4 * * mon-fri", T(2025, 3, 14, 13, 0), T(2025, 3, 14, 9, 0)),
    ("0 9-17/4 * * MON-FRI", T(2025, 3, 14, 13, 0), T(2025, 3, 14, 9, 0)),
    ("30 2 1,15 * *", T(2025, 3, 15, 2, 30), T(2025, 3, 1, 2, 30)),
    ("5/20 * * * *", T(2025, 3, 14, 10, 25), T(2025, 3, 14, 10, 5)),
    ("0,10-12 * * * *", T(2025, 3, 14, 10, 10), T(2025, 3, 14, 10, 0)),
    ("0 0 1 jan *", T(2026, 1, 1), T(2025, 1, 1)),
    ("0 0 1 */3 *", T(2025, 4, 1), T(2025, 1, 1)),
    ("0 0 29 feb *", T(2028, 2, 29), T(2024, 2, 29)),
    ("0 0 * * 7", T(2025, 3, 16), T(2025, 3, 9)),  # 7 = Sunday
    ("0 0 * * sun", T(2025, 3, 16), T(2025, 3, 9)),
    ("0 12 13 * fri", T(2025, 3, 14, 12), T(2025, 3, 13, 12)),  # both restricted: the 13th OR a Friday
    ("0 12 */10 * fri", T(2025, 3, 21, 12), T(2025, 2, 21, 12)),  # '*'-prefixed day: day AND Friday
    ("59 23 31 dec *", T(2025, 12, 31, 23, 59), T(2024, 12, 31, 23, 59)),
    ("@hourly", T(2025, 3, 14, 11), T(2025, 3, 14, 10)),
    ("@weekly", T(2025, 3, 16), T(2025, 3, 9)),
]


@pytest.mark.parametrize("expr,after,before", CRON_CASES)
def test_cron_known_answers(expr, after, before):
    assert next_fire(expr, AT) == after
    assert prev_fire(expr, AT) == before
    assert parse_cron(expr).matches(after) and parse_cron(expr).matches(before)
    assert next_fire(expr, after) > after  # strictly after
    assert prev_fire(expr, before) == before  # at or before


def test_cron_utc_naive_and_other_offsets():
    cest = dt.timezone(dt.timedelta(hours=2))
    assert next_fire("0 3 * * *", dt.datetime(2025, 3, 29, 5, 30, tzinfo=cest)) == T(2025, 3, 30, 3)
    assert next_fire("0 3 * * *", dt.datetime(2025, 3, 29, 2, 30)) == T(2025, 3, 29, 3)  # naive = UTC
    # DST-free: every day of the year at 03:00 UTC, 365 distinct fire times
    t, fires = T(2025, 1, 1), []
    while t < T(2026, 1, 1):
        t = next_fire("0 3 * * *", t)
        fires.append(t)
    assert len(fires) == 366 and all(f.hour == 3 and f.minute == 0 for f in fires)  # incl. 2026-01-01
    assert all((b - a) == dt.timedelta(days=1) for a, b in zip(fires, fires[1:], strict=False))


@pytest.mark.parametrize("expr,match", [
    ("* * * *", "expected 5 fields"),
    ("* * * * * *", "expected 5 fields"),
    ("60 * * * *", "minute 60 is out of range 0-59"),
    ("* 24 * * *", "hour 24"),
    ("* * 0 * *", "day of month 0"),
    ("* * * 13 *", "month 13"),
    ("* * * * 8", "day of week 8"),
    ("5-1 * * * *", "goes backwards"),
    ("*/0 * * * *", "step '0'"),
    ("* * * foo *", "month 'foo'"),
    ("1,,2 * * * *", "empty item"),
    ("0 0 30 feb *", "never fires"),
    ("@every 5m", "unknown shorthand"),
    ("", "empty cron expression"),
])
def test_cron_rejects_with_one_line(expr, match):
    with pytest.raises(InputError, match=match) as info:
        parse_cron(expr)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/reg/registry.db"
    else:
        yield request.getfixturevalue("pg_url")
    dispose_engines()


@pytest.fixture
def sqlite_url(tmp_path):
    yield f"sqlite:///{tmp_path}/reg/registry.db"
    dispose_engines()


def _registry(url: str, tmp_path: Path, user: str = "tester"):
    from promptreg.services.registry import Registry

    return Registry(db_url=url, home=str(tmp_path / "home"), user=user)


def _seed(reg, name: str = "sentiment", aliases=("production", "staging")) -> tuple[int, int]:
    """A prompt with one version and aliases, written directly (no artifact needed here)."""
    with reg.session() as s:
        p = Prompt(name=name, created_by="tester")
        s.add(p)
        s.flush()
        v = PromptVersion(prompt_id=p.id, number=1, sha256="a" * 64, artifact_uri="file:///x", size_bytes=1,
                          method="prompt_tuning", base_model_fingerprint="f" * 64, manifest={}, created_by="tester")
        s.add(v)
        s.flush()
        for a in aliases:
            s.add(Alias(prompt_id=p.id, name=a, version_id=v.id))
        return p.id, v.id


def _runs(reg, schedule_id: int | None = None) -> list[ScheduleRun]:
    with reg.session() as s:
        q = sa.select(ScheduleRun).order_by(ScheduleRun.slot_at, ScheduleRun.id)
        if schedule_id is not None:
            q = q.where(ScheduleRun.schedule_id == schedule_id)
        return list(s.execute(q).scalars())


def _schedule_row(reg, schedule_id: int) -> Schedule:
    with reg.session() as s:
        return s.get(Schedule, schedule_id)


class Recorder:
    def __init__(self, fail_on: set[str] | None = None, report: int | None = None):
        self.calls: list[tuple[int, dt.datetime, int]] = []
        self.fail_on = fail_on or set()
        self.report = report

    def __call__(self, claim: sch.Claim):
        self.calls.append((claim.schedule_id, claim.slot_at, claim.attempt))
        if claim.data_uri in self.fail_on:
            raise ValueError(f"cannot read {claim.data_uri}\nsecond line of the message")
        return self.report


# --------------------------------------------------------------------------------------------------
# add / list / remove


def test_add_list_remove(sqlite_url, tmp_path):
    reg = _registry(sqlite_url, tmp_path)
    _seed(reg)
    t0 = T(2025, 3, 14, 10, 7)
    info = sch.add_schedule(reg, "sentiment@production", " 0  3 * * * ", "s3://bucket/fresh.jsonl",
                            suite_path="suite.yaml", policy={"action": "flag"}, now=t0)
    assert (info.ref, info.cron, info.next_run_at) == ("sentiment@production", "0 3 * * *", "2025-03-15T03:00:00+00:00")
    assert info.policy == {"action": "flag"} and info.enabled and info.last_status is None
    other = sch.add_schedule(reg, "sentiment@staging", "@daily", "s3://bucket/fresh.jsonl", now=t0)

    with pytest.raises(ConflictError, match=f"schedule {info.id} already checks sentiment@production"):
        sch.add_schedule(reg, "sentiment@production", "*/5 * * * *", "s3://bucket/fresh.jsonl")
    with pytest.raises(NotFoundError, match="no alias 'canary'"):
        sch.add_schedule(reg, "sentiment@canary", "0 3 * * *", "d.jsonl")
    with pytest.raises(NotFoundError, match="no prompt named 'nope'"):
        sch.add_schedule(reg, "nope@production", "0 3 * * *", "d.jsonl")
    with pytest.raises(InputError, match="NAME@ALIAS"):
        sch.add_schedule(reg, "sentiment:1", "0 3 * * *", "d.jsonl")
    with pytest.raises(InputError, match="invalid cron expression"):
        sch.add_schedule(reg, "sentiment@production", "0 3 * *", "other.jsonl")
    with pytest.raises(InputError, match="--data"):
        sch.add_schedule(reg, "sentiment@production", "0 3 * * *", "  ")

    assert [i.id for i in sch.list_schedules(reg)] == [info.id, other.id]
    assert [i.id for i in sch.list_schedules(reg, "sentiment")] == [info.id, other.id]
    with pytest.raises(NotFoundError):
        sch.list_schedules(reg, "nope")

    # a run, then remove: the schedule and its runs go, the audit log keeps both events
    sch.run_due(reg, Recorder(), now=T(2025, 3, 15, 3, 0, 5))
    assert sch.list_schedules(reg)[0].last_status == "ok"
    removed = sch.remove_schedule(reg, info.id)
    assert removed.id == info.id
    assert [i.id for i in sch.list_schedules(reg)] == [other.id]
    assert _runs(reg, info.id) == []
    with pytest.raises(NotFoundError, match=f"no schedule {info.id}"):
        sch.remove_schedule(reg, info.id)
    with reg.session() as s:
        actions = [a for (a,) in s.execute(sa.select(AuditEvent.action).order_by(AuditEvent.id))]
    assert actions == ["schedule.add", "schedule.add", "schedule.remove"]


def test_missed_runs_coalesce_into_one(sqlite_url, tmp_path):
    reg = _registry(sqlite_url, tmp_path)
    _seed(reg)
    t0 = T(2025, 3, 14, 10, 7)
    info = sch.add_schedule(reg, "sentiment@production", "0 * * * *", "d.jsonl", now=t0)
    assert info.next_run_at == "2025-03-14T11:00:00+00:00"

    rec = Recorder()
    assert sch.run_due(reg, rec, now=T(2025, 3, 14, 10, 59)) == []  # not due yet
    results = sch.run_due(reg, rec, now=T(2025, 3, 14, 15, 30))  # down from 11:00 to 15:30: five slots missed
    assert [(r.status, r.slot_at) for r in results] == [("ok", "2025-03-14T15:00:00+00:00")]
    assert rec.calls == [(info.id, T(2025, 3, 14, 15), 1)]
    row = _schedule_row(reg, info.id)
    assert row.next_run_at == T(2025, 3, 14, 16) and row.lease_owner is None and row.lease_until is None
    assert row.last_run_at is not None
    assert sch.run_due(reg, rec, now=T(2025, 3, 14, 15, 59)) == []  # nothing until the next slot
    sch.run_due(reg, rec, now=T(2025, 3, 14, 16, 0, 1))
    assert [c[1] for c in rec.calls] == [T(2025, 3, 14, 15), T(2025, 3, 14, 16)]
    assert [(r.slot_at, r.status, r.attempts) for r in _runs(reg)] == [
        (T(2025, 3, 14, 15), "ok", 1), (T(2025, 3, 14, 16), "ok", 1)]


def test_failing_check_is_recorded_and_the_others_run(sqlite_url, tmp_path):
    reg = _registry(sqlite_url, tmp_path)
    _seed(reg)
    t0 = T(2025, 3, 14, 10, 7)
    ids = [sch.add_schedule(reg, "sentiment@production", "0 * * * *", f"d{i}.jsonl", now=t0).id for i in range(3)]
    rec = Recorder(fail_on={"d1.jsonl"}, report=None)
    results = sch.run_due(reg, rec, now=T(2025, 3, 14, 11, 0, 1))
    assert sorted(c[0] for c in rec.calls) == ids
    by_id = {r.schedule_id: r for r in results}
    assert by_id[ids[1]].status == "failed"
    assert by_id[ids[1]].error == "ValueError: cannot read d1.jsonl"
    assert by_id[ids[0]].status == by_id[ids[2]].status == "ok"
    runs = {r.schedule_id: r for r in _runs(reg)}
    assert runs[ids[1]].status == "failed" and runs[ids[1]].error == "ValueError: cannot read d1.jsonl"
    assert runs[ids[0]].error is None and runs[ids[0]].finished_at is not None
    # a failed slot is final: it is not run again
    assert sch.run_due(reg, rec, now=T(2025, 3, 14, 11, 30)) == []


def test_check_result_links_the_drift_report(sqlite_url, tmp_path):
    reg = _registry(sqlite_url, tmp_path)
    _seed(reg)
    info = sch.add_schedule(reg, "sentiment@production", "0 * * * *", "d.jsonl", now=T(2025, 3, 14, 10))
    results = sch.run_due(reg, Recorder(report=42), now=T(2025, 3, 14, 11, 0, 1))
    assert results[0].drift_report_id == 42 and _runs(reg, info.id)[0].drift_report_id == 42


def _drift_report(reg, run_id: int, prompt_id: int, version_id: int) -> int:
    with reg.session() as s:
        r = DriftReport(prompt_id=prompt_id, version_id=version_id, alias="production", data_fingerprint="d" * 64,
                        data_uri="d.jsonl", base_model_fingerprint="f" * 64, statistics={}, decision="none",
                        action="none", action_detail={}, schedule_run_id=run_id, created_by="tester")
        s.add(r)
        s.flush()
        return r.id


def test_crashed_claims_lease_expiry_retry_recovery_and_give_up(any_url, tmp_path):
    reg = _registry(any_url, tmp_path)
    prompt_id, version_id = _seed(reg)
    info = sch.add_schedule(reg, "sentiment@production", "0 * * * *", "d.jsonl", now=T(2025, 3, 14, 10))
    lease = 600

    # a process claims the 11:00 slot and dies (never completes)
    t = T(2025, 3, 14, 11, 0, 10)
    [dead] = sch.claim_due(reg, owner="dead-1", now=t, lease_s=lease)
    assert dead.slot_at == T(2025, 3, 14, 11) and dead.attempt == 1
    rec = Recorder()
    assert sch.run_due(reg, rec, owner="B", now=t + dt.timedelta(seconds=lease / 2)) == []  # lease still held
    # after the lease expired (no newer slot yet): the SAME row is retried, once
    res = sch.run_due(reg, rec, owner="B", now=t + dt.timedelta(seconds=lease + 1))
    assert [(r.run_id, r.status, r.attempt) for r in res] == [(dead.run_id, "ok", 2)]
    assert rec.calls == [(info.id, T(2025, 3, 14, 11), 2)]
    [run] = _runs(reg)
    assert (run.status, run.owner, run.attempts) == ("ok", "B", 2)
    assert sch.complete(reg, dead, "ok") is False  # the dead owner's late completion changes nothing
    assert sch.run_due(reg, rec, owner="C", now=T(2025, 3, 14, 11, 50)) == []

    # the 12:00 slot: the check commits its drift report, then the process dies before `complete`
    [dead2] = sch.claim_due(reg, owner="dead-2", now=T(2025, 3, 14, 12, 0, 5), lease_s=lease)
    report_id = _drift_report(reg, dead2.run_id, prompt_id, version_id)
    assert sch.run_due(reg, rec, owner="C", now=T(2025, 3, 14, 12, 11)) == []  # recovered, NOT re-run
    assert len(rec.calls) == 1
    run12 = _runs(reg)[-1]
    assert (run12.slot_at, run12.status, run12.drift_report_id) == (T(2025, 3, 14, 12), "ok", report_id)
    assert _schedule_row(reg, info.id).lease_owner is None

    # the 13:00 slot dies; by the time anyone looks again the 15:00 slot is due: one run, the old slot abandoned
    [dead3] = sch.claim_due(reg, owner="dead-3", now=T(2025, 3, 14, 13, 0, 5), lease_s=lease)
    res = sch.run_due(reg, rec, owner="D", now=T(2025, 3, 14, 15, 20))
    assert [(r.slot_at, r.status) for r in res] == [("2025-03-14T15:00:00+00:00", "ok")]
    runs = {r.slot_at: r for r in _runs(reg)}
    assert runs[T(2025, 3, 14, 13)].status == "abandoned" and "superseded" in runs[T(2025, 3, 14, 13)].error
    assert len(rec.calls) == 2

    # a slot whose every attempt dies is given up after MAX_ATTEMPTS
    t = T(2025, 3, 14, 16, 0, 5)
    for attempt in range(1, sch.MAX_ATTEMPTS + 1):
        [c] = sch.claim_due(reg, owner=f"dying-{attempt}", now=t, lease_s=lease)
        assert (c.slot_at, c.attempt) == (T(2025, 3, 14, 16), attempt)
        t += dt.timedelta(seconds=lease + 1)
    assert sch.claim_due(reg, owner="E", now=t, lease_s=lease) == []
    run16 = _runs(reg)[-1]
    assert run16.status == "abandoned" and "given up" in run16.error and run16.attempts == sch.MAX_ATTEMPTS
    assert {r.slot_at: r.status for r in _runs(reg)} == {
        T(2025, 3, 14, h): s for h, s in ((11, "ok"), (12, "ok"), (13, "abandoned"), (15, "ok"), (16, "abandoned"))}


def test_heartbeat_keeps_a_slow_check_from_being_taken_over(sqlite_url, tmp_path):
    reg = _registry(sqlite_url, tmp_path)
    _seed(reg)
    info = sch.add_schedule(reg, "sentiment@production", "* * * * *", "d.jsonl", now=T(2025, 1, 1))
    lease_s = 0.3
    seen = []

    def slow_check(claim):
        for _ in range(6):  # 0.9 s: three times the lease
            time.sleep(0.15)
            # another process looking now (real time) finds the lease renewed: nothing to claim
            seen.append(sch.claim_due(reg, owner="other", lease_s=lease_s))

    results = sch.run_due(reg, slow_check, owner="A", lease_s=lease_s)
    assert [r.status for r in results] == ["ok"]
    assert all(c == [] for c in seen)
    assert [(r.owner, r.status) for r in _runs(reg, info.id)] == [("A", "ok")]


# --------------------------------------------------------------------------------------------------
# several processes on PostgreSQL


RUN_DUE_SCRIPT = textwrap.dedent(
    """
    import sys, time, os
    import sqlalchemy as sa
    from promptreg.services.registry import Registry
    from promptreg.scheduling import run_due
    url, home, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    reg = Registry(db_url=url, home=home, user="worker")
    engine = reg.engine

    def check(claim):
        time.sleep(0.2)  # long enough for the other processes to try the same schedule
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO check_log (schedule_id, slot_at, pid) VALUES (:s, :t, :p)"),
                         {"s": claim.schedule_id, "t": claim.slot_at.isoformat(), "p": os.getpid()})

    time.sleep(max(0.0, start - time.time()))
    results = run_due(reg, check)
    print("RAN=" + ",".join(str(r.schedule_id) for r in results if r.status == "ok"))
    """
)


def test_concurrent_run_due_processes_run_each_slot_once(any_url, tmp_path):
    """Three `run-due` processes started together (PostgreSQL, and SQLite on one machine)."""
    url = any_url
    reg = _registry(url, tmp_path)
    _seed(reg)
    long_ago = dt.datetime.now(UTC) - dt.timedelta(days=3)
    ids = [sch.add_schedule(reg, "sentiment@production", "*/5 * * * *", f"d{i}.jsonl", now=long_ago).id
           for i in range(5)]
    with make_engine(url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE check_log (schedule_id int, slot_at text, pid int)"))

    start = time.time() + 2.5
    procs = [subprocess.Popen([sys.executable, "-c", RUN_DUE_SCRIPT, url, str(tmp_path / "home"), repr(start)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        outs.append((p.returncode, out, err))
    for rc, _out, err in outs:
        assert rc == 0, err
    with make_engine(url).connect() as conn:
        log_rows = conn.execute(sa.text("SELECT schedule_id, slot_at FROM check_log")).all()
    assert sorted(r[0] for r in log_rows) == ids  # every schedule exactly once, in total
    ran = [int(x) for _rc, out, _err in outs for x in out.split("RAN=")[1].strip().split(",") if x]
    assert sorted(ran) == ids
    runs = _runs(reg)
    assert sorted(r.schedule_id for r in runs) == ids
    assert all(r.status == "ok" and r.attempts == 1 for r in runs)
    assert {r.slot_at.isoformat() for r in runs} == {s for _i, s in log_rows}
    assert all(_schedule_row(reg, i).lease_owner is None for i in ids)


# --------------------------------------------------------------------------------------------------
# SIGTERM


SCHEDULER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from promptreg.registry.models import DriftReport
    from promptreg.services.registry import Registry
    from promptreg.scheduling import Scheduler
    url, home, marker, sleep_s, grace_s = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    reg = Registry(db_url=url, home=home, user="scheduler")

    def check(claim):
        # the report is written in ONE transaction, tagged with the run; the slow part happens inside it
        with reg.session() as s:
            report = DriftReport(prompt_id=1, version_id=1, alias=claim.alias, data_fingerprint="d" * 64,
                                 data_uri=claim.data_uri, base_model_fingerprint="f" * 64,
                                 statistics={"slot": claim.slot_at.isoformat()}, decision="none", action="none",
                                 action_detail={}, schedule_run_id=claim.run_id, created_by="scheduler")
            s.add(report)
            s.flush()
            marker.write_text(str(claim.run_id))
            time.sleep(sleep_s)
        return report.id

    code = Scheduler(reg, check, poll_s=0.2, grace_s=grace_s,
                     on_result=lambda r: print("RESULT", r.status, r.run_id, flush=True)).run_forever()
    print("EXIT", code, flush=True)
    sys.exit(code)
    """
)


def _start_scheduler(url: str, tmp_path: Path, sleep_s: float, grace_s: float):
    marker = tmp_path / "check-started"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", SCHEDULER_SCRIPT, url, str(tmp_path / "home"), str(marker),
                             str(sleep_s), str(grace_s)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the scheduler never started the check"
        time.sleep(0.05)
    return proc


def _reports(reg) -> list[DriftReport]:
    with reg.session() as s:
        return list(s.execute(sa.select(DriftReport).order_by(DriftReport.id)).scalars())


def _due_yearly(reg) -> int:
    two_years_ago = dt.datetime.now(UTC) - dt.timedelta(days=730)
    return sch.add_schedule(reg, "sentiment@production", "0 0 1 1 *", "d.jsonl", now=two_years_ago).id


def test_sigterm_interrupts_a_slow_check_cleanly_and_the_slot_is_retried(sqlite_url, tmp_path):
    reg = _registry(sqlite_url, tmp_path)
    _seed(reg)
    sid = _due_yearly(reg)
    proc = _start_scheduler(sqlite_url, tmp_path, sleep_s=60, grace_s=0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert time.monotonic() - t0 < 15
    assert "RESULT interrupted" in out and "EXIT 0" in out
    assert _reports(reg) == []  # the report transaction was rolled back: nothing half-written
    [run] = _runs(reg, sid)
    assert run.status == "running" and run.attempts == 1 and "interrupted" in run.error
    assert _schedule_row(reg, sid).lease_owner is None  # released at once, no need to wait for the lease

    # the next run retries the same slot, once
    rec = Recorder(report=None)
    res = sch.run_due(reg, rec)
    assert [(r.run_id, r.status, r.attempt) for r in res] == [(run.id, "ok", 2)]
    assert sch.run_due(reg, rec) == []
    assert len(rec.calls) == 1 and [r.status for r in _runs(reg, sid)] == ["ok"]


def test_sigterm_lets_the_running_check_finish_then_exits(sqlite_url, tmp_path):
    reg = _registry(sqlite_url, tmp_path)
    _seed(reg)
    sid = _due_yearly(reg)
    proc = _start_scheduler(sqlite_url, tmp_path, sleep_s=1.0, grace_s=20)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "RESULT ok" in out and "EXIT 0" in out
    [report] = _reports(reg)
    [run] = _runs(reg, sid)
    assert (run.status, run.drift_report_id, report.schedule_run_id) == ("ok", report.id, run.id)
    # restarted: the finished slot is not run again
    rec = Recorder()
    assert sch.run_due(reg, rec) == [] and rec.calls == []


def test_graceful_stop_before_a_check_starts_gives_the_claim_back(sqlite_url, tmp_path):
    reg = _registry(sqlite_url, tmp_path)
    _seed(reg)
    sid = _due_yearly(reg)
    rec = Recorder()
    before = signal.getsignal(signal.SIGTERM)
    with sch.GracefulStop(grace_s=5) as guard:
        guard.stop.set()  # as if SIGTERM arrived: run_due starts nothing
        assert sch.run_due(reg, rec, guard=guard) == []
    assert rec.calls == [] and _runs(reg, sid) == []
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


# --------------------------------------------------------------------------------------------------
# migration


def test_migration_0003_up_and_down(any_url):
    new = {"schedule", "schedule_run", "drift_report", "environment_model"}

    def tables():
        with make_engine(any_url).connect() as conn:
            return set(sa.inspect(conn).get_table_names())

    migrate.upgrade(any_url, "0003")
    assert migrate.current_revision(any_url) == "0003"
    assert new <= tables()
    with make_engine(any_url).connect() as conn:
        uniques = {u["name"]: u["column_names"] for u in sa.inspect(conn).get_unique_constraints("schedule_run")}
    assert uniques["uq_schedule_run_schedule_id_slot_at"] == ["schedule_id", "slot_at"]
    migrate.downgrade(any_url, "0002")
    assert migrate.current_revision(any_url) == "0002"
    assert tables() & new == set() and {"eval_run", "gate_result", "prompt"} <= tables()
    migrate.upgrade(any_url)
    assert new <= tables()
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    with make_engine(any_url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def test_schedule_run_slot_is_unique_in_the_database(sqlite_url, tmp_path):
    reg = _registry(sqlite_url, tmp_path)
    _seed(reg)
    sid = sch.add_schedule(reg, "sentiment@production", "0 * * * *", "d.jsonl", now=T(2025, 1, 1)).id
    with reg.session() as s:
        s.add(ScheduleRun(schedule_id=sid, slot_at=T(2025, 1, 1, 1), status="ok", owner="a"))
    with pytest.raises(sa.exc.IntegrityError):
        with reg.session() as s:
            s.add(ScheduleRun(schedule_id=sid, slot_at=T(2025, 1, 1, 1), status="running", owner="b"))


# --------------------------------------------------------------------------------------------------
# export


def _settings(tmp_path, **env):
    from promptreg.settings import Settings

    return Settings.load(cwd=tmp_path, env=env)


def test_export_snippets(tmp_path):
    prod = _settings(tmp_path, PROMPTREG_DB_URL="postgresql+psycopg://u:s3cret@db:5432/reg",
                     MLFLOW_TRACKING_URI="https://mlflow.example", PROMPTREG_ARTIFACT_URI="s3://bucket/prompts",
                     MLFLOW_S3_ENDPOINT_URL="https://s3.example")
    cron = sch.export_snippet("crontab", prod)
    assert cron.splitlines()[-1] == ("*/5 * * * * cd /srv/app && promptreg schedule run-due "
                                     ">> /var/log/promptreg.log 2>&1")
    assert all(line.startswith("#") for line in cron.splitlines()[:-1])
    for text in (cron, sch.export_snippet("k8s", prod), sch.export_snippet("github", prod)):
        assert "s3cret" not in text and "PROMPTREG_DB_URL" in text

    k8s_text = sch.export_snippet("k8s", prod, every="*/10 * * * *", image="registry.example/promptreg:1")
    assert "Forbid is NOT needed" in k8s_text
    k8s = yaml.safe_load(k8s_text)
    assert (k8s["kind"], k8s["spec"]["schedule"], k8s["spec"]["concurrencyPolicy"]) == ("CronJob", "*/10 * * * *", "Allow")
    container = k8s["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["promptreg", "schedule", "run-due"]
    assert container["image"] == "registry.example/promptreg:1"
    env = {e["name"]: e for e in container["env"]}
    assert env["PROMPTREG_DB_URL"]["valueFrom"]["secretKeyRef"]["key"] == "db-url"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "https://mlflow.example"
    assert "valueFrom" in env["AWS_SECRET_ACCESS_KEY"]

    gh = yaml.safe_load(sch.export_snippet("github", prod))
    on = gh.get("on", gh.get(True))  # YAML 1.1 reads the key `on` as true
    assert on["schedule"] == [{"cron": "*/5 * * * *"}]
    job = gh["jobs"]["run-due"]
    assert job["env"]["PROMPTREG_DB_URL"] == "${{ secrets.PROMPTREG_DB_URL }}"
    assert job["env"]["AWS_ACCESS_KEY_ID"] == "${{ secrets.AWS_ACCESS_KEY_ID }}"
    assert job["steps"][-1]["run"] == "promptreg schedule run-due"

    embedded = sch.export_snippet("k8s", _settings(tmp_path))
    assert "CHANGE-ME" in embedded  # local paths are flagged, not silently exported
    with pytest.raises(InputError, match="unknown export format"):
        sch.export_snippet("systemd", prod)
    with pytest.raises(InputError, match="invalid cron"):
        sch.export_snippet("crontab", prod, every="every 5 minutes")


# --------------------------------------------------------------------------------------------------
# CLI (the lead registers the commands in promptreg.cli.main; here they are added for the test)


@pytest.fixture
def cli(monkeypatch, sqlite_url, tmp_path, capsys):
    from promptreg.cli import main as main_mod
    from promptreg.cli.schedule_cmds import schedule_group, scheduler_cmd

    monkeypatch.setitem(main_mod.cli.commands, "schedule", schedule_group)
    monkeypatch.setitem(main_mod.cli.commands, "scheduler", scheduler_cmd)
    for var in ("PROMPTREG_HOME", "PROMPTREG_DB_URL", "MLFLOW_TRACKING_URI", "PROMPTREG_ARTIFACT_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*args):
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main_mod.main(["--db-url", sqlite_url, "--home", str(tmp_path / "home"), *args])
        out, err = capsys.readouterr()
        return info.value.code, out, err

    return run


def test_cli_add_list_run_due_remove_export(cli, sqlite_url, tmp_path, monkeypatch):
    reg = _registry(sqlite_url, tmp_path)
    _seed(reg)
    code, out, err = cli("schedule", "add", "sentiment@production", "--cron", "0 3 * * *", "--data", "fresh.jsonl",
                         "--suite", "suite.yaml", "--policy", "action=flag", "--policy", '{"min_rows": 50}', "--json")
    assert code == 0, err
    added = json.loads(out)
    assert added["ref"] == "sentiment@production" and added["policy"] == {"action": "flag", "min_rows": 50}

    code, out, err = cli("schedule", "list")
    assert code == 0 and "sentiment@production" in out and "0 3 * * *" in out

    code, out, err = cli("schedule", "add", "sentiment@production", "--cron", "0 3 * *", "--data", "x.jsonl")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: invalid cron expression")

    # no drift service in this build (or not yet): one line, exit 2
    monkeypatch.setitem(sys.modules, "promptreg.services.drift", None)
    code, out, err = cli("schedule", "run-due")
    assert (code, err) == (2, "error: drift checks are not available in this build\n")

    # with a drift service: it gets (registry, claim, schedule_run_id=); a failing check makes run-due exit 1
    calls = []

    def scheduled_check(registry, claim, *, schedule_run_id=None):
        assert schedule_run_id == claim.run_id and registry.settings.db_url == sqlite_url
        calls.append(claim.ref)
        if claim.data_uri == "bad.jsonl":
            raise InputError("bad.jsonl: no such file")
        return 7

    fake = type(sys)("promptreg.services.drift")
    fake.scheduled_check = scheduled_check
    monkeypatch.setitem(sys.modules, "promptreg.services.drift", fake)
    code, out, err = cli("schedule", "run-due")
    assert (code, out.strip()) == (0, "nothing due")
    past = dt.datetime.now(UTC) - dt.timedelta(days=2)
    sch.add_schedule(reg, "sentiment@staging", "0 3 * * *", "ok.jsonl", now=past)
    sch.add_schedule(reg, "sentiment@staging", "0 3 * * *", "bad.jsonl", now=past)
    code, out, err = cli("schedule", "run-due")
    assert code == 1, err
    assert calls == ["sentiment@staging", "sentiment@staging"]
    assert "drift report 7" in out and "failed" in out and "bad.jsonl: no such file" in out
    code, out, err = cli("schedule", "run-due", "--json")
    assert (code, json.loads(out)) == (0, [])

    code, out, err = cli("schedule", "export", "--format", "crontab")
    assert code == 0 and out.splitlines()[-1].endswith("promptreg schedule run-due >> /var/log/promptreg.log 2>&1")

    code, out, err = cli("schedule", "remove", str(added["id"]))
    assert code == 0 and f"removed schedule {added['id']}" in out
    code, out, err = cli("schedule", "remove", str(added["id"]))
    assert (code, err) == (2, f"error: no schedule {added['id']}\n")


def test_cli_modules_import_light():
    code = ("import sys; import promptreg.cli.schedule_cmds, promptreg.scheduling.schedules, promptreg.scheduling.cron; "
            "print(sorted(m for m in ('torch', 'transformers', 'mlflow', 'alembic') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**os.environ})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


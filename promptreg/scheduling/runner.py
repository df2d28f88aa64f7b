"""Running due checks: ``run_due`` (what cron, a systemd timer, a Kubernetes CronJob or a GitHub Actions
schedule calls) and ``Scheduler`` (the same loop as a long-lived process), with SIGTERM/SIGINT handling.

Invariants: a check that raises is recorded ``failed`` (one line) and the others still run; while a
check runs a heartbeat renews its lease; after a stop signal no new check starts and the running one
gets a grace period, then is interrupted and its claim released for a retry.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from promptreg.errors import InputError, PromptregError, exception_line, one_line
from promptreg.scheduling.claims import (
    DEFAULT_LEASE_S,
    Claim,
    claim_due,
    complete,
    default_owner,
    release,
    renew_lease,
)
from promptreg.scheduling.cron import iso, utc, utcnow

if TYPE_CHECKING:
    from promptreg.services.registry import Registry

log = logging.getLogger(__name__)

#: Seconds a check may still run after SIGTERM/SIGINT before it is interrupted (Kubernetes waits 30 s).
DEFAULT_GRACE_S = 20.0

CheckFn = Callable[[Claim], Any]


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
                log.warning("schedule %s: cannot renew the lease: %s", self.claim.schedule_id, exception_line(exc, 500))

    def halt(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def _clock(now: dt.datetime | None) -> Callable[[], dt.datetime]:
    if now is None:
        return utcnow
    base, t0 = utc(now), time.monotonic()
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
                       slot_at=iso(claim.slot_at), status="ok", attempt=claim.attempt)
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
        result.status, result.error = "interrupted", one_line(f"interrupted: {exc}", 500)
        result.seconds = round(time.monotonic() - t0, 3)
        return result
    except Exception as exc:  # noqa: BLE001 - a failing check is recorded; the others still run
        status, error = "failed", exception_line(exc, 500)
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

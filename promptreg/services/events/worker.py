"""The delivery worker: ``promptreg events run``, and a thread of ``promptreg scheduler`` (and of
``promptreg server``: :func:`start_background`).

One round: (1) fan out new outbox events into one delivery per subscribed target (the MLflow mirror,
every matching webhook); (2) claim due webhook deliveries in batches with a lease, POST them
(``concurrency`` at a time), record each try; (3) claim the MLflow deliveries one prompt at a time,
oldest first, and mirror the prompt (promptreg.services.events.mirror). A failed try is retried
after an exponential backoff with jitter; after ``max_attempts`` tries in a round the delivery is
parked as ``dead`` (``promptreg events list --dead``, ``events retry``).

Delivery is at least once: a worker killed between a POST and recording it leaves the delivery
leased; when the lease expires another worker (or the restarted one) delivers it again with the
same ``webhook-id``, the receiver's idempotency key. Several workers at once never hold the same
delivery (the lease is a compare-and-swap), and a heartbeat thread extends a worker's leases while it
works so that a slow target is not taken over.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from promptreg.errors import PromptregError, exception_line, one_line
from promptreg.scheduling import default_owner
from promptreg.services.events.config import EventSettings
from promptreg.services.events.policy import mirrored, next_step, subscribed

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 120.0
DEFAULT_POLL_S = 2.0


@dataclass
class Outcome:
    """One try of one delivery, as recorded."""

    delivery_id: int
    event_id: str
    type: str
    prompt: str | None
    target: str
    attempt: int
    status: str                 # delivered, pending (retry later), dead, cancelled
    status_code: int | None = None
    error: str | None = None
    seconds: float = 0.0
    next_attempt_at: dt.datetime | None = None
    recorded: bool = True       # False: the lease had been lost, only the try was logged

    def to_dict(self) -> dict:
        return {"delivery_id": self.delivery_id, "event_id": self.event_id, "type": self.type,
                "prompt": self.prompt, "target": self.target, "attempt": self.attempt, "status": self.status,
                "status_code": self.status_code, "error": self.error, "seconds": round(self.seconds, 3),
                "next_attempt_at": self.next_attempt_at.isoformat(timespec="seconds") if self.next_attempt_at else None,
                "recorded": self.recorded}


@dataclass
class RoundStats:
    fanned_out: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def to_dict(self) -> dict:
        return {"fanned_out": self.fanned_out,
                **{st: self.count(st) for st in ("delivered", "pending", "dead", "cancelled")},
                "outcomes": [o.to_dict() for o in self.outcomes]}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class EventWorker:
    def __init__(self, registry, settings: EventSettings | None = None, *, owner: str | None = None,
                 lease_s: float = DEFAULT_LEASE_S, batch: int = 50, concurrency: int = 4,
                 on_outcome: Callable[[Outcome], None] | None = None, rng: random.Random | None = None):
        self.registry = registry
        self.settings = settings or EventSettings.load()
        self.owner = owner or default_owner()
        self.lease_s, self.batch, self.concurrency = float(lease_s), int(batch), int(concurrency)
        self.on_outcome = on_outcome
        self.rng = rng or random.Random()

    # ----------------------------------------------------------------------------- fan-out
    def _targets(self, ev, hooks, now: dt.datetime) -> list[tuple[str, int | None, dt.datetime]]:
        from promptreg.registry.outbox import MLFLOW_TARGET

        created = ev.created_at
        out: list[tuple[str, int | None, dt.datetime]] = []
        if mirrored(ev.type, ev.prompt_id):
            out.append((MLFLOW_TARGET, None, max(now, created + dt.timedelta(seconds=self.settings.mlflow_delay_s))))
        for h in hooks:
            if subscribed(list(h.events or []), h.prompts, h.created_by, ev.type, ev.prompt_name, created,
                          h.created_at):
                out.append((f"webhook:{h.id}", h.id, now))
        return out

    def fan_out(self) -> int:
        """Split new outbox events into deliveries; the number of events this worker fanned out."""
        from promptreg.registry import delivery_queue as dq

        done = 0
        while True:
            now = _utcnow()
            with self.registry.session() as s:
                events = dq.unfanned_events(s, limit=200)
                if not events:
                    return done
                hooks = dq.live_webhooks(s)
                done += sum(dq.fan_out(s, ev.id, self._targets(ev, hooks, now), ev.prompt_id, now) for ev in events)
            if len(events) < 200:
                return done

    # ----------------------------------------------------------------------------- one try
    def _step(self, c, now: dt.datetime) -> tuple[str, dt.datetime | None]:
        from promptreg.registry.outbox import MLFLOW_TARGET

        policy = self.settings.mlflow_retry if c.target == MLFLOW_TARGET else self.settings.webhook_retry
        return next_step(c.round_attempt, policy, now, self.rng)

    def record_all(self, tries) -> list[Outcome]:
        """Record tries ``(claimed, result of attempt(), step or None)`` in ONE transaction: delivered,
        cancelled, or failed and then retried later (``step``: the decision for a group; else the
        delivery's own backoff) or parked as dead."""
        from promptreg.registry import delivery_queue as dq

        now = _utcnow()
        outcomes = []
        with self.registry.session() as s:
            for c, res, step in tries:
                ok, error, nxt = bool(res.get("ok")), res.get("error"), None
                if ok:
                    status = "delivered"
                elif res.get("cancel"):
                    status = "cancelled"
                else:
                    status, nxt = step or self._step(c, now)
                recorded = dq.finish(s, c, now=now, ok=ok, status=status, status_code=res.get("status_code"),
                                     error=one_line(error, 1000) if error else None, next_attempt_at=nxt)
                outcomes.append(Outcome(c.delivery_id, c.event_id, c.type, c.prompt_name, c.target, c.attempt, status,
                                        res.get("status_code"), error, res.get("seconds", 0.0), nxt, recorded))
        if self.on_outcome is not None:
            for out in outcomes:
                self.on_outcome(out)
        return outcomes

    def attempt(self, c, hook) -> dict:
        """POST one claimed delivery (threads: no database here)."""
        from promptreg.services.events import signing
        from promptreg.services.events.http import DeliveryFailed, post

        t0 = time.perf_counter()
        if hook is None:
            return {"ok": False, "cancel": True, "error": "the webhook was removed"}
        try:
            secret = signing.decrypt(hook.secret_encrypted)
            body = signing.body_bytes(c.payload)
            headers = signing.headers(secret, c.event_id, int(time.time()), body)
            code, text = post(hook.url, body, headers, timeout=self.settings.timeout_s,
                              allow_private=self.settings.webhook_allow_private)
        except (DeliveryFailed, PromptregError) as exc:
            return {"ok": False, "error": str(exc), "seconds": time.perf_counter() - t0}
        ok = 200 <= code < 300
        return {"ok": ok, "status_code": code, "seconds": time.perf_counter() - t0,
                "error": None if ok else f"HTTP {code}" + (f": {text}" if text else "")}

    def deliver_webhooks(self, claims) -> list[Outcome]:
        """POST a batch (``concurrency`` at a time), then record every try in one transaction."""
        from promptreg.registry import delivery_queue as dq

        with self.registry.session() as s:
            hooks = {h.id: h for h in dq.live_webhooks(s)}
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(claims)))) as pool:
            futures = {pool.submit(self.attempt, c, hooks.get(c.webhook_id)): c for c in claims}
            tries = [(futures[fut], fut.result(), None) for fut in as_completed(futures)]
        return self.record_all(tries)

    def deliver_mlflow(self, group) -> list[Outcome]:
        from promptreg.services.events.mirror import reconcile

        t0 = time.perf_counter()
        try:
            reconcile(self.registry, group[0].prompt_name)
            res = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - any failure is a failed try, retried later
            res = {"ok": False, "error": exception_line(exc, 500)}
        res["seconds"] = time.perf_counter() - t0
        step = None if res["ok"] else self._step(group[0], _utcnow())  # the group waits as one, behind its head
        return self.record_all([(c, res, step) for c in group])

    # ----------------------------------------------------------------------------- rounds
    def deliver_due(self, stop: threading.Event | None = None) -> list[Outcome]:
        """Deliver everything due when the round starts (retries that fall due meanwhile wait for the
        next round)."""
        from promptreg.registry import delivery_queue as dq

        due_by = _utcnow()
        outcomes: list[Outcome] = []
        while stop is None or not stop.is_set():
            with self.registry.session() as s:
                claims = dq.claim_webhook_deliveries(s, self.owner, _utcnow(), self.lease_s, self.batch, due_by)
            if not claims:
                break
            outcomes += self.deliver_webhooks(claims)
        while stop is None or not stop.is_set():
            with self.registry.session() as s:
                heads = dq.mlflow_heads(s, _utcnow(), due_by)
            progressed = False
            for head in heads:
                if stop is not None and stop.is_set():
                    break
                with self.registry.session() as s:
                    group = dq.claim_mlflow_group(s, head, self.owner, _utcnow(), self.lease_s, due_by)
                if group:
                    progressed = True
                    outcomes += self.deliver_mlflow(group)
            if not progressed:
                break
        return outcomes

    def run_once(self, stop: threading.Event | None = None) -> RoundStats:
        with _Heartbeat(self):
            stats = RoundStats(fanned_out=self.fan_out())
            stats.outcomes = self.deliver_due(stop)
        return stats

    def run_forever(self, stop: threading.Event, poll_s: float = DEFAULT_POLL_S,
                    on_error: Callable[[Exception], None] | None = None) -> None:
        """Rounds until ``stop`` is set; a round that did work is followed at once by the next."""
        try:
            with _Heartbeat(self):
                while not stop.is_set():
                    busy = False
                    try:
                        busy = bool(self.fan_out()) | bool(self.deliver_due(stop))
                    except Exception as exc:  # noqa: BLE001 - database down for a while: try again later
                        log.warning("event delivery round failed: %s", exception_line(exc, 500))
                        if on_error is not None:
                            on_error(exc)
                    if not busy:
                        stop.wait(poll_s)
        finally:
            self.release("the worker stopped")

    def release(self, reason: str) -> int:
        from promptreg.registry import delivery_queue as dq

        try:
            with self.registry.session() as s:
                return dq.release(s, self.owner, _utcnow(), reason)
        except PromptregError:
            return 0  # the leases expire by themselves


class _Heartbeat(threading.Thread):
    """Extends the worker's leases every lease/3 while a round runs."""

    def __init__(self, worker: EventWorker):
        super().__init__(name=f"promptreg-events-lease-{worker.owner}", daemon=True)
        self.worker = worker
        self._halt = threading.Event()

    def __enter__(self) -> _Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self.join(timeout=30)

    def run(self) -> None:
        from promptreg.registry import delivery_queue as dq

        while not self._halt.wait(max(0.05, self.worker.lease_s / 3)):
            try:
                with self.worker.registry.session() as s:
                    dq.renew(s, self.worker.owner, _utcnow(), self.worker.lease_s)
            except Exception as exc:  # noqa: BLE001 - keep trying until the leases expire
                log.warning("cannot renew the event delivery leases: %s", exception_line(exc, 500))


class BackgroundWorker:
    """A worker in a daemon thread of a long-lived process; :meth:`stop` ends it and frees its leases."""

    def __init__(self, worker: EventWorker, poll_s: float):
        self.worker = worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=worker.run_forever, args=(self._stop, poll_s),
                                        name="promptreg-events", daemon=True)

    def start(self) -> BackgroundWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout)


def start_background(registry_settings, poll_s: float = DEFAULT_POLL_S, **kwargs) -> BackgroundWorker:
    """Deliver events in a background thread (``promptreg scheduler``; the hook for ``promptreg
    server``: call it at start-up, ``.stop()`` at shutdown). Uses its own Registry (engine pool,
    MLflow client) built from ``registry_settings``; ``kwargs`` go to :class:`EventWorker` (e.g. its
    ``settings``, the events settings)."""
    from promptreg.services.registry import Registry

    return BackgroundWorker(EventWorker(Registry(registry_settings), **kwargs), poll_s).start()


__all__ = ["BackgroundWorker", "EventWorker", "Outcome", "RoundStats", "start_background"]

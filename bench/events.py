"""The outbox's cost and throughput (issue 16).

1. ``promote_added_ms``: the latency a promote pays for the outbox, in-process, on SQLite (WAL, the
   embedded default) and on PostgreSQL when it is reachable. ``lifecycle.promote(..., to="staging")``
   (no gate; versions not mirrored to MLflow, so the whole in-process path: reads + compare-and-swap
   transaction + audit event), measured with the outbox listener registered and
   removed (``sqlalchemy.event.remove``: the only way to switch it off, on purpose): pairs of promotes,
   one per mode in random order, so that both modes see the same machine load. Medians and p90 per mode,
   the median of the paired differences, and the listener's own time (payload + INSERT, inside the
   transaction); goal: <= 2 ms added at p50.
2. ``events_per_s``: signed events delivered to a loopback receiver (``ThreadingHTTPServer`` that
   verifies every signature with the ``standardwebhooks`` package) by one ``EventWorker.run_once`` (fan-out,
   claims, POSTs with 4 in flight, the attempt log), from N committed events, on SQLite and PostgreSQL.
   The peer in the same run: MLflow's own webhook delivery (``mlflow.webhooks.delivery.deliver_webhook``
   with an in-process SQL model-registry store: a thread pool, fire-and-forget, nothing recorded, no
   retry after the request's own urllib3 retries) to the same receiver, for N events.

Prints ONE JSON object on stdout (progress on stderr).

Run: .venv/bin/python bench/events.py [--promotes 300] [--events 500]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.services import create_pg_database, drop_pg_database, free_port, pg_available  # noqa: E402
from tests.helpers import make_artifact  # noqa: E402
from tests.webhook_receiver import Receiver  # noqa: E402


def log(msg: str) -> None:
    print(f"[events] {msg}", file=sys.stderr, flush=True)


def _registry(db_url: str, home: Path):
    from promptreg.services.registry import Registry

    return Registry(home=str(home), db_url=db_url, tracking_uri=f"http://127.0.0.1:{free_port()}",
                    artifact_uri=str(home / "artifacts"))


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def promote_latency(db_url: str, home: Path, promotes: int) -> dict:
    """Pairs of promotes, one with and one without the outbox listener, in random order within each
    pair (so that both see the same load); the listener's own time is measured too (a timing wrapper
    registered in its place)."""
    import random

    from sqlalchemy import event
    from sqlmodel import Session

    from promptreg.registry import outbox
    from promptreg.services import lifecycle

    reg = _registry(db_url, home)
    for seed in (1, 2):
        reg.push(make_artifact(home / f"a{seed}", seed=seed), "p")
    lifecycle.promote(reg, "p:1", to="staging")
    listener_ms: list[float] = []

    def timed(session, ctx):
        t0 = time.perf_counter()
        outbox._publish_audit_events(session, ctx)
        listener_ms.append((time.perf_counter() - t0) * 1000)

    event.remove(Session, "after_flush", outbox._publish_audit_events)
    times: dict[str, list[float]] = {"with_outbox": [], "without_outbox": []}
    diffs: list[float] = []
    holder, rng = 1, random.Random(0)
    try:
        for i in range(promotes // 2 + 5):
            pair = {}
            for mode in rng.sample(["with_outbox", "without_outbox"], 2):
                if mode == "with_outbox":
                    event.listen(Session, "after_flush", timed)
                holder = 3 - holder
                t0 = time.perf_counter()
                lifecycle.promote(reg, f"p:{holder}", to="staging")
                pair[mode] = (time.perf_counter() - t0) * 1000
                if mode == "with_outbox":
                    event.remove(Session, "after_flush", timed)
            if i >= 5:  # the first pairs warm up
                for mode, ms in pair.items():
                    times[mode].append(ms)
                diffs.append(pair["with_outbox"] - pair["without_outbox"])
    finally:
        event.listen(Session, "after_flush", outbox._publish_audit_events)
    out = {mode: {"n": len(xs), "p50_ms": round(statistics.median(xs), 3), "p90_ms": round(_pct(xs, 0.9), 3)}
           for mode, xs in times.items()}
    out["added_p50_ms"] = round(out["with_outbox"]["p50_ms"] - out["without_outbox"]["p50_ms"], 3)
    out["paired_difference_p50_ms"] = round(statistics.median(diffs), 3)
    out["listener_p50_ms"] = round(statistics.median(listener_ms[10:]), 3)
    out["listener_p90_ms"] = round(_pct(listener_ms[10:], 0.9), 3)
    out["goal_p50_ms"] = 2.0
    return out


def ours_events_per_s(db_url: str, home: Path, n: int) -> dict:
    from promptreg.services.events.config import EventSettings
    from promptreg.services.events.webhooks import add_webhook
    from promptreg.services.events.worker import EventWorker

    receiver = Receiver().start()
    try:
        reg = _registry(db_url, home)
        _view, receiver.secret = add_webhook(reg, receiver.url, "*")
        for seed in (1, 2):
            reg.push(make_artifact(home / f"a{seed}", seed=seed), "p")
        for i in range(n - 3):
            reg.set_alias("p", "staging", 1 + i % 2)
        worker = EventWorker(reg, EventSettings(webhook_allow_private=True, mlflow_delay_s=3600), concurrency=4)
        t0 = time.perf_counter()
        stats = worker.run_once()
        seconds = time.perf_counter() - t0
        got = receiver.snapshot()
    finally:
        receiver.stop()
    delivered = stats.count("delivered")
    assert delivered == n and len(got) == n and all(r.valid for r in got), (delivered, len(got))
    return {"events": n, "seconds": round(seconds, 3), "events_per_s": round(n / seconds, 1)}


def mlflow_events_per_s(home: Path, n: int) -> dict:
    os.environ["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] = "true"
    os.environ["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] = "http,https"
    from mlflow.entities.webhook import WebhookAction, WebhookEntity, WebhookEvent
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
    from mlflow.webhooks.delivery import deliver_webhook

    receiver = Receiver().start()
    try:
        store = SqlAlchemyStore(f"sqlite:///{home / 'mlflow.db'}")
        event = WebhookEvent(WebhookEntity.MODEL_VERSION_ALIAS, WebhookAction.CREATED)
        store.create_webhook("bench", receiver.url, [event], secret="s3cret")
        payload = {"name": "p", "alias": "staging", "version": "1"}
        deliver_webhook(event=event, payload=payload, store=store)  # warm: session, webhook cache
        while len(receiver.snapshot()) < 1:
            time.sleep(0.01)
        t0 = time.perf_counter()
        for _ in range(n):
            deliver_webhook(event=event, payload=payload, store=store)
        deadline = time.monotonic() + 300
        while len(receiver.snapshot()) < n + 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        seconds = time.perf_counter() - t0
        got = len(receiver.snapshot()) - 1
    finally:
        receiver.stop()
    return {"events": n, "received": got, "seconds": round(seconds, 3), "events_per_s": round(got / seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--promotes", type=int, default=300)
    ap.add_argument("--events", type=int, default=500)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from promptreg.services.events.signing import new_key

    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "PROMPTREG_WEBHOOK_KEY": new_key(),
                       "PROMPTREG_WEBHOOK_ALLOW_PRIVATE": "1"})
    result: dict = {"promote_added_ms": {}, "events_per_s": {}}
    backends = ["sqlite"] + (["postgresql"] if pg_available() else [])
    with tempfile.TemporaryDirectory(prefix="promptreg-bench-events-") as tmp:
        for backend in backends:
            for what in ("promote", "events"):
                home = Path(tmp) / f"{backend}-{what}"
                home.mkdir()
                url = f"sqlite:///{home / 'registry.db'}" if backend == "sqlite" else create_pg_database("bench_events")
                try:
                    if what == "promote":
                        log(f"{backend}: {args.promotes} promotes, with and without the outbox")
                        result["promote_added_ms"][backend] = promote_latency(url, home, args.promotes)
                    else:
                        log(f"{backend}: {args.events} events to a loopback receiver")
                        result["events_per_s"][f"promptreg_{backend}"] = ours_events_per_s(url, home, args.events)
                finally:
                    from promptreg.registry.db import dispose_engines

                    dispose_engines()
                    if backend == "postgresql":
                        drop_pg_database(url)
        log(f"peer: MLflow webhook delivery, {args.events} events")
        home = Path(tmp) / "mlflow"
        home.mkdir()
        result["events_per_s"]["mlflow_webhooks"] = peer = mlflow_events_per_s(home, args.events)
    ours = result["events_per_s"]["promptreg_sqlite"]["events_per_s"]
    result["events_per_s"]["ratio_promptreg_sqlite_vs_mlflow"] = round(ours / peer["events_per_s"], 3) \
        if peer["events_per_s"] else None
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

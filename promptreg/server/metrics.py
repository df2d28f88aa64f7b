"""Prometheus metrics of ``promptreg server`` (prometheus-client).

One :class:`ServerMetrics` per application, on its own CollectorRegistry, so several apps in one
process (tests) never collide. With several uvicorn workers the CLI sets PROMETHEUS_MULTIPROC_DIR
before the workers start; every worker then writes its samples there and ``/metrics`` (answered
by any worker) sums them through prometheus-client's MultiProcessCollector.
"""

from __future__ import annotations

import os

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class ServerMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        # in multiprocess mode the values live in files; the exposition registry is built per scrape
        reg = None if multiprocess() else self.registry
        self.requests = Counter("promptreg_server_requests", "HTTP requests answered, by route and status.",
                                ["method", "route", "status"], registry=reg)
        self.latency = Histogram("promptreg_server_request_duration_seconds",
                                 "Time to answer a request (until the response starts), by route.",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=reg)
        self.in_flight = Gauge("promptreg_server_requests_in_flight", "Requests being answered.",
                               registry=reg, multiprocess_mode="livesum")
        self.auth_failures = Counter("promptreg_server_auth_failures",
                                     "Failed authentications, by reason.", ["reason"], registry=reg)
        self.rate_limited = Counter("promptreg_server_rate_limited",
                                    "Requests refused with 429 (too many failed authentications).", registry=reg)
        self.denied = Counter("promptreg_server_permission_denied", "Requests refused with 403, by action.",
                              ["action"], registry=reg)
        self.sync_runs = Counter("promptreg_server_sync_runs", "Periodic MLflow syncs, by outcome.",
                                 ["outcome"], registry=reg)
        self.aliases_restored = Counter("promptreg_server_aliases_restored",
                                        "MLflow aliases changed by hand and restored from the database.",
                                        registry=reg)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if multiprocess():
            from prometheus_client import multiprocess as mp

            registry = CollectorRegistry()
            mp.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["ServerMetrics", "multiprocess"]

"""The FastAPI application of ``promptreg server``: :func:`create_app`.

Invariants:
- Every route under ``/api/v1/`` and ``/metrics`` has a permission rule (routing.Guard); only
  ``/healthz`` and ``/readyz`` are public, and they answer ``ok``/``unavailable`` per component, no
  URL, no error text. ``create_app`` refuses an app with an unguarded route.
- Every error leaves as one JSON object ``{"error": {"code", "message", "type"}}`` with the status of
  its class (promptreg.errors); an unexpected exception is a 500 with code ``internal`` and a request
  id, its traceback goes to the server log only.
- No CORS unless origins are configured; no interactive docs (they would load scripts from a CDN);
  the OpenAPI schema is served at ``/api/v1/openapi.json`` to authenticated callers and checked into
  docs/openapi.json.
- The registry facade is created once per process; each request acts through
  :meth:`ServerContext.registry_for` as its authenticated principal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from promptreg import __version__
from promptreg.errors import PromptregError, RateLimitedError
from promptreg.server.auth import Authenticator, FailureLimiter
from promptreg.server.config import ServerConfig
from promptreg.server.metrics import ServerMetrics
from promptreg.server.tokens import Principal, TokenStore

log = logging.getLogger("promptreg.server")
API = "/api/v1"
PUBLIC_PATHS = ("/healthz", "/readyz")
SYSTEM_PRINCIPAL = "promptreg-server"
_READY_TTL_S = 2.0
_MLFLOW_PROBE_EVERY_S = 30.0


@dataclass
class ServerContext:
    """What every request shares: the registry facade, the config, identity and limits, metrics."""

    registry: Any
    config: ServerConfig
    tokens: TokenStore
    authenticator: Authenticator
    limiter: FailureLimiter
    metrics: ServerMetrics
    _ready: tuple[float, int, dict[str, str]] | None = field(default=None, repr=False)
    mlflow_status: str = "checking"
    _mlflow_checked_at: float = field(default=-1e9, repr=False)
    _mlflow_probing: bool = field(default=False, repr=False)
    _probe_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _long_limiter: Any = field(default=None, repr=False)

    async def run_long(self, fn, /, *args, **kwargs):
        """Run the body of a long request (unpacking and hashing an upload, push, eval, gate, drift,
        gc, sync, run-due) in threads of its own, at most ``long_concurrency`` at once per worker.
        Reads and alias moves keep the shared thread pool (40 threads), so they do not queue behind
        uploads and evaluations; a long request over the limit waits for a slot (under its own
        timeout)."""
        import functools

        import anyio

        if self._long_limiter is None:  # created on the event loop, on first use
            self._long_limiter = anyio.CapacityLimiter(self.config.long_concurrency)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self._long_limiter)

    @property
    def protected(self) -> tuple[str, ...]:
        return self.config.protected_aliases

    def registry_for(self, principal: Principal):
        """The facade acting as ``principal``: its audit events name it and its token id."""
        return self.registry.acting_as(principal.name, token_id=principal.token_id)

    def readiness(self) -> tuple[int, dict[str, str]]:
        """200 when the database (at the schema this server needs) and the artifact store answer.
        MLflow is reported from a background probe (at most every 30 s, never awaited here: a first
        MLflow call can take seconds) and does not make the server unready: it is a mirror, sync
        repairs it."""
        now = time.monotonic()
        if self._ready is None or now - self._ready[0] >= _READY_TTL_S:
            checks = {}
            for component, probe in (("database", self._probe_database), ("artifact_store", self._probe_store)):
                try:
                    probe()
                    checks[component] = "ok"
                except Exception:  # noqa: BLE001 - readiness reports, it never raises
                    checks[component] = "unavailable"
            status = 200 if checks["database"] == checks["artifact_store"] == "ok" else 503
            self._ready = (now, status, checks)
        self.probe_mlflow_soon()
        return self._ready[1], {**self._ready[2], "mlflow": self.mlflow_status}

    def probe_mlflow_soon(self) -> None:
        """Start a background MLflow probe unless one ran in the last 30 s or is running."""
        now = time.monotonic()
        with self._probe_lock:
            if self._mlflow_probing or now - self._mlflow_checked_at < _MLFLOW_PROBE_EVERY_S:
                return
            self._mlflow_probing = True

        def probe():
            try:
                self.registry.mirror.check()
                self.mlflow_status = "ok"
            except Exception:  # noqa: BLE001
                self.mlflow_status = "unavailable"
            finally:
                self._mlflow_checked_at = time.monotonic()
                self._mlflow_probing = False

        threading.Thread(target=probe, name="promptreg-mlflow-probe", daemon=True).start()

    def _probe_database(self) -> None:
        from promptreg.registry.db import check
        from promptreg.registry.migrate import HEAD_REVISION, current_revision

        check(self.registry.engine)
        if current_revision(self.registry.settings.db_url) != HEAD_REVISION:
            raise PromptregError("schema not at head")

    def _probe_store(self) -> None:
        self.registry.store.check()


def _error_body(exc: PromptregError, status: int) -> dict:
    err: dict[str, Any] = {"code": exc.code, "message": " ".join(str(exc).split()), "type": type(exc).__name__}
    report = getattr(exc, "report", None)
    if report is not None:
        from promptreg.codec import encode

        err["details"] = {"report": encode(report)}   # a failed gate: the client shows its table
    return {"error": err}


def _install_error_handlers(app, metrics: ServerMetrics) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    async def promptreg_error(request, exc: PromptregError):
        headers = {}
        if isinstance(exc, RateLimitedError):
            headers["Retry-After"] = str(exc.retry_after)
        if exc.http_status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="promptreg"'
        return JSONResponse(_error_body(exc, exc.http_status), status_code=exc.http_status, headers=headers)

    async def validation_error(request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        loc = [str(p) for p in first.get("loc", ())]
        where = ".".join(loc[1:]) if loc[:1] == ["body"] and len(loc) > 1 else ".".join(loc) or "body"
        message = f"invalid request: {where}: {first.get('msg', 'invalid')}"
        return JSONResponse({"error": {"code": "invalid_input", "message": message, "type": "InputError"}},
                            status_code=400)

    async def http_error(request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "http_error")
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"method {request.method} not allowed on {request.url.path}"}.get(
            exc.status_code, str(exc.detail))
        return JSONResponse({"error": {"code": code, "message": message, "type": "HTTPError"}},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def internal_error(request, exc: Exception):
        request_id = uuid.uuid4().hex[:12]
        log.error("internal error in %s %s (request %s)", request.method, request.url.path, request_id,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return JSONResponse({"error": {"code": "internal", "message": f"internal server error (request {request_id}; "
                                       "the traceback is in the server log)", "type": "InternalError"}},
                            status_code=500)

    app.add_exception_handler(PromptregError, promptreg_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)


class _MetricsMiddleware:
    """Pure ASGI: time each request until its response starts, label it by route template."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}
        observed = False

        def observe():
            nonlocal observed
            if observed:
                return
            observed = True
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], path, str(status["code"])).inc()
            self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - t0)

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                observe()
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            observe()


def _worker_settings(config: ServerConfig):
    """The events worker's settings. With ``mirror = "outbox"`` no command mirrors before the worker,
    so its MLflow deliveries start at once (the 10 s default lets a direct-mode command's own mirror go
    first); PROMPTREG_EVENTS_MLFLOW_DELAY_S / promptreg.toml [events] still win."""
    from promptreg.services.events.config import EventSettings

    return EventSettings.load(defaults={"mlflow_delay_s": 0.0} if config.mirror == "outbox" else None)


def create_app(registry, config: ServerConfig | None = None, *, tokens: TokenStore | None = None):
    """The application over ``registry`` (a ``promptreg.Registry``), configured by ``config``."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    from promptreg.server import routes
    from promptreg.server.routing import Call, api_route, guard_of

    config = (config or ServerConfig()).check()
    metrics = ServerMetrics()
    registry.engine, registry.store, registry.mirror  # noqa: B018 - created once, shared by every request's view
    registry.mirror_inline = config.mirror == "inline"   # views made by acting_as copy it
    tokens = tokens or TokenStore(registry.engine, protected=config.protected_aliases)
    oidc = None
    if config.oidc is not None:
        from promptreg.server.oidc import OidcVerifier

        oidc = OidcVerifier(config.oidc, config.protected_aliases)
    ctx = ServerContext(registry, config, tokens, Authenticator(tokens, oidc, cache_s=config.auth_cache_s),
                        FailureLimiter(config.auth_failures, config.auth_window_s), metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        ctx.probe_mlflow_soon()      # warms MLflow up in the background; /readyz reports it
        task = asyncio.create_task(_sync_loop(ctx)) if config.sync_interval_s > 0 else None
        worker = None
        if config.events_worker:     # delivers the outbox: the MLflow mirror (mirror = "outbox") and webhooks
            from promptreg.services.events.worker import start_background

            worker = start_background(registry.settings, settings=_worker_settings(config))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if worker is not None:
                from starlette.concurrency import run_in_threadpool

                await run_in_threadpool(worker.stop)

    app = FastAPI(title="promptreg registry", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None, redirect_slashes=False,
                  description="The promptreg registry as a service. Every route needs "
                              "`Authorization: Bearer <token>` except /healthz and /readyz.")
    app.state.server = ctx
    _install_error_handlers(app, metrics)

    @app.get("/healthz", include_in_schema=True, summary="Liveness (public)")
    async def healthz():
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", summary="Readiness: database and artifact store reachable (public)")
    async def readyz():
        from starlette.concurrency import run_in_threadpool

        status, checks = await run_in_threadpool(ctx.readiness)
        return JSONResponse({"status": "ready" if status == 200 else "unavailable", "checks": checks},
                            status_code=status)

    from fastapi import Depends

    from promptreg.server.policy import Action
    from promptreg.server.routing import current_call

    @api_route(app.router, "GET", "/metrics", action=Action.READ, summary="Prometheus metrics")
    async def prometheus(call: Call = Depends(current_call)):
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @api_route(app.router, "GET", f"{API}/openapi.json", action=Action.READ, summary="This API's OpenAPI schema")
    async def openapi(call: Call = Depends(current_call)):
        return app.openapi()

    routes.register(app.router)

    unguarded = [f"{sorted(r.methods)} {r.path}" for r in app.routes
                 if hasattr(r, "methods") and r.path not in PUBLIC_PATHS and guard_of(r) is None]
    if unguarded:
        raise RuntimeError(f"routes without a permission rule: {', '.join(unguarded)}")
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST", "PUT", "DELETE"], allow_headers=["Authorization",
                                                                                          "Content-Type"])
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    return app


async def _sync_loop(ctx: ServerContext) -> None:
    """Every ``sync_interval_s``: make MLflow match the database again (``Registry.sync``); aliases
    changed by hand in MLflow are restored and each restore is an audit event."""
    from starlette.concurrency import run_in_threadpool

    while True:
        await asyncio.sleep(ctx.config.sync_interval_s)
        try:
            report = await run_in_threadpool(periodic_sync, ctx)
        except PromptregError as exc:
            ctx.metrics.sync_runs.labels("failed").inc()
            log.warning("periodic sync failed: %s", exc)
        except Exception:  # noqa: BLE001 - the loop must survive; the traceback goes to the log
            ctx.metrics.sync_runs.labels("failed").inc()
            log.exception("periodic sync failed")
        else:
            if report is not None:
                ctx.metrics.sync_runs.labels("ok" if not report.failed else "partial").inc()
                ctx.metrics.aliases_restored.inc(len(report.aliases_set))


def periodic_sync(ctx: ServerContext):
    """One sync as the server's own principal; on PostgreSQL only one replica at a time runs it
    (a session advisory lock; the others skip this round and return None)."""
    from promptreg.server.policy import Grant

    registry = ctx.registry_for(Principal(SYSTEM_PRINCIPAL, Grant("admin"), kind="system"))
    engine = ctx.registry.engine
    grace = ctx.config.sync_grace_s
    if engine.dialect.name != "postgresql":
        return registry.sync(grace_s=grace)
    with engine.connect() as conn:
        got = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({SYNC_LOCK_KEY})").scalar()
        conn.commit()
        if not got:
            return None
        try:
            return registry.sync(grace_s=grace)
        finally:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({SYNC_LOCK_KEY})")
            conn.commit()


def app_from_env():
    """The app of one worker when ``promptreg server --workers N`` (N > 1) starts uvicorn's process
    manager: the CLI passed its config and registry flags in the environment."""
    import json
    import os

    from promptreg.services.registry import Registry
    from promptreg.settings import Settings

    config = ServerConfig.from_json(os.environ["PROMPTREG_SERVER_CONFIG"])
    flags = json.loads(os.environ.get("PROMPTREG_SERVER_FLAGS") or "{}")
    settings = Settings.load(**{k: v for k, v in flags.items() if v and k != "url"})
    return create_app(Registry(settings), config)


#: 63-bit key of the PostgreSQL advisory lock that keeps replicas from syncing at the same time.
SYNC_LOCK_KEY = 0x70726F6D7073  # "promps"

__all__ = ["API", "PUBLIC_PATHS", "ServerContext", "app_from_env", "create_app", "periodic_sync"]

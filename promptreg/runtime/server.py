"""HTTP server over :class:`promptreg.runtime.service.PromptRuntime` (FastAPI; ``promptreg serve``).

Endpoints:

- ``POST /v1/classify`` and ``POST /v1/generate``: body ``{"requests": [{"ref", "text"
  (, "max_new_tokens")}, ...]}`` answered ``200 {"results": [...]}`` (one result per request, in order;
  a failed request carries ``error`` / ``error_type`` and the others still succeed), or a single request
  object answered with its result alone (``200``, or ``400`` / ``404`` / ``409`` / ``500`` with
  ``{"ref", "error", "error_type"}`` when it failed). A malformed body is ``400 {"error"}``; a full queue
  ``503``.
- ``GET /healthz``: ``200 {"status": "ok", "base_model_fingerprint", ...}`` once the base model is
  loaded, ``503`` before.
- ``GET /metrics``: Prometheus text format 0.0.4 (written by hand, no client library).
- ``POST /feedback``: ``{"request_id", "label"}`` (or ``{"feedback": [...]}``) records the true label of
  an answered request (``202``); ``409`` when capture is off, ``400`` when malformed or when the label
  is not one of the version's labels (known for requests this process captured).

Request ids and capture. Every answered request gets a ``request_id`` (32 hex digits) in its result; a
single-request call also returns it as the ``X-Request-Id`` header. With a
:class:`promptreg.runtime.capture.Capturer` (``serve --capture-rate``), each successful answer is
sampled on the event loop thread and handed to the capturer's queue (its flusher thread redacts, bounds
and writes the rows); ``/feedback`` queues the label the same way. The serve app has no authentication
of its own (it listens on loopback by default; put it behind the network's gateway), and /feedback is
validated like the inference routes.

Batching: every request (each element of a ``requests`` list too) goes into one asyncio queue
(``max_queue`` long). A single batcher task takes the first waiting request, then whatever else arrives
within ``max_wait_ms`` (up to ``max_batch`` requests), from any client and for any version, and runs them
as ONE runtime call per endpoint kind in a worker thread (the event loop stays free to accept more;
those form the next batch). A runtime with ``concurrent_calls`` > 1 (VllmRuntime: vLLM schedules the rows
of concurrent calls in its continuous batches) gets up to that many batches in flight at once. Aliases are resolved by the runtime on every batch, with its bounded
staleness (``alias_ttl_s``).
"""


import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from promptreg.errors import (
    AuthenticationError,
    InputError,
    PermissionDeniedError,
    PromptregError,
    error_type,
)
from promptreg.refs import parse_ref
from promptreg.runtime.service import as_request

ENDPOINTS = ("classify", "generate")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATUS = {"InputError": 400, "NotFoundError": 404, "IntegrityError": 409, "ConflictError": 409,
           "StoreUnavailableError": 503}


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{_num(b)}"}} {c}' for b, c in zip(self.buckets, self.counts,
                                                                                   strict=True)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        brace = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{brace} {_num(self.sum)}", f"{name}_count{brace} {self.count}"]
        return out


def _num(x: float) -> str:
    return repr(float(x)) if isinstance(x, float) else str(x)


@dataclass
class ServerMetrics:
    """Counters behind ``/metrics`` (updated on the event loop thread only)."""

    http: dict[tuple[str, int], int] = field(default_factory=dict)          # (endpoint, code)
    requests: dict[tuple[str, str], int] = field(default_factory=dict)      # (endpoint, ok|error)
    batch_size: dict[str, _Histogram] = field(default_factory=lambda: {e: _Histogram(BATCH_BUCKETS)
                                                                        for e in ENDPOINTS})
    latency: dict[str, _Histogram] = field(default_factory=lambda: {e: _Histogram(LATENCY_BUCKETS)
                                                                     for e in ENDPOINTS})
    max_batch_seen: int = 0

    def count(self, table: dict, key) -> None:
        table[key] = table.get(key, 0) + 1


@dataclass
class _Pending:
    kind: str
    request: Any
    future: asyncio.Future
    t0: float


def _labels(**kv: Any) -> str:
    return ",".join(f'{k}="{str(v)}"' for k, v in kv.items())


def render_metrics(metrics: ServerMetrics, runtime, queue_depth: int, capture=None) -> str:
    """Prometheus text exposition format 0.0.4."""
    stats = runtime.stats()
    lines: list[str] = []

    def family(name: str, kind: str, help_: str, samples: list[str]) -> None:
        lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *samples])

    family("promptreg_http_requests_total", "counter", "HTTP calls answered, by endpoint and status code.",
           [f"promptreg_http_requests_total{{{_labels(endpoint=e, code=c)}}} {n}"
            for (e, c), n in sorted(metrics.http.items())])
    family("promptreg_requests_total", "counter",
           "Inference requests answered, by endpoint and outcome (a batch call counts each request).",
           [f"promptreg_requests_total{{{_labels(endpoint=e, status=s)}}} {n}"
            for (e, s), n in sorted(metrics.requests.items())])
    family("promptreg_batch_size", "histogram", "Requests per runtime batch (one mixed forward / generation).",
           [line for e in ENDPOINTS for line in metrics.batch_size[e].lines("promptreg_batch_size",
                                                                             _labels(endpoint=e))])
    family("promptreg_batch_size_max", "gauge", "Largest runtime batch run so far.",
           [f"promptreg_batch_size_max {metrics.max_batch_seen}"])
    family("promptreg_request_latency_seconds", "histogram",
           "Time from a request's arrival to its answer (queueing included), by endpoint.",
           [line for e in ENDPOINTS for line in metrics.latency[e].lines("promptreg_request_latency_seconds",
                                                                          _labels(endpoint=e))])
    family("promptreg_queue_depth", "gauge", "Requests waiting for the batcher.",
           [f"promptreg_queue_depth {queue_depth}"])
    for key, name, help_ in (
            ("cache_hits", "promptreg_cache_hits_total", "Version cache hits."),
            ("cache_misses", "promptreg_cache_misses_total", "Version cache misses (a version built)."),
            ("cache_evictions", "promptreg_cache_evictions_total", "Versions evicted from the LRU cache."),
            ("alias_lookups", "promptreg_registry_lookups_total", "Registry look-ups to resolve references.")):
        family(name, "counter", help_, [f"{name} {stats[key]}"])
    family("promptreg_loaded_versions", "gauge", "Versions held in the cache.",
           [f"promptreg_loaded_versions {stats['loaded_versions']}"])
    family("promptreg_loaded_bytes", "gauge", "Tensor bytes of the versions held in the cache.",
           [f"promptreg_loaded_bytes {stats['loaded_bytes']}"])
    family("promptreg_base_model_loaded", "gauge", "1 once the base model is loaded.",
           [f"promptreg_base_model_loaded {1 if runtime.loaded else 0}"])
    if capture is not None:
        st = capture.stats.to_dict()
        family("promptreg_capture_rows_total", "counter",
               "Captured rows by outcome (offered: sampled on the request path; the rest: what became of them).",
               [f"promptreg_capture_rows_total{{{_labels(outcome=k)}}} {v}" for k, v in sorted(st.items())
                if k not in ("objects", "feedback_written")])
        family("promptreg_capture_objects_total", "counter", "Capture objects written to the artifact store.",
               [f"promptreg_capture_objects_total {st['objects']}"])
        family("promptreg_feedback_rows_total", "counter", "Feedback rows written to the artifact store.",
               [f"promptreg_feedback_rows_total {st['feedback_written']}"])
        family("promptreg_capture_queue_depth", "gauge", "Captured rows waiting for the flusher.",
               [f"promptreg_capture_queue_depth {capture.queued}"])
    return "\n".join(lines) + "\n"


KNOWN_IDS = 100_000           # captured request ids remembered (to check a feedback label against)
MAX_LABEL_CHARS = 256


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def capture_row(kind: str, request_id: str, ts: str, req, res: dict) -> dict:
    """What is captured of one answered request (``label``: left for the true label from /feedback)."""
    row = {"request_id": request_id, "ts": ts, "endpoint": kind, "ref": req.ref, "prompt": res["name"],
           "version": res["version"], "sha256": res["sha256"], "text": req.text}
    if kind == "classify":
        row.update(prediction=res.get("label"), probs=res.get("probs"))
    else:
        row.update(generated=res.get("text"), tokens=res.get("tokens"), max_new_tokens=req.max_new_tokens)
    return row


_WRITERS = ("contributor", "promoter", "admin")


def create_app(runtime, *, max_batch: int = 64, max_wait_ms: float = 10, max_queue: int = 1024, capture=None,
               authenticate=None):
    """The FastAPI app. The base model is loaded at start-up (lifespan) when the runtime can find it.
    ``capture``: a :class:`promptreg.runtime.capture.Capturer` (started and closed with the app).

    ``authenticate``: ``Authorization`` header -> principal (``.name``, ``.grant`` with ``.role`` and
    ``.sees(prompt)``), raising AuthenticationError: then every route but ``/healthz`` needs a
    credential (401), a request for a prompt the principal's grant does not see is refused (403, alone
    in a batch) and ``/feedback`` needs a contributor or higher (it writes ground truth that drift
    checks trust). None: no authentication (``promptreg serve --no-auth``, loopback only)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    if max_batch < 1 or max_wait_ms < 0 or max_queue < 1:
        raise InputError("max_batch and max_queue must be at least 1, max_wait_ms not negative")
    metrics = ServerMetrics()
    state: dict[str, Any] = {"queue": None, "task": None, "load_error": None}
    # a runtime whose engine schedules concurrent calls together (VllmRuntime: continuous batching) gets
    # up to ``concurrent_calls`` batches in flight; the own runtime runs one batch at a time
    in_flight = max(1, int(getattr(runtime, "concurrent_calls", 1)))
    executor = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="promptreg-runtime")
    slots = asyncio.Semaphore(in_flight)
    running: set[asyncio.Task] = set()
    known: OrderedDict[str, list[str]] = OrderedDict()    # captured request id -> the version's labels

    async def run_batch(kind: str, items: list) -> None:
        loop = asyncio.get_running_loop()
        fn = runtime.classify if kind == "classify" else runtime.generate
        try:
            results = await loop.run_in_executor(executor, fn, [p.request for p in items])
        except Exception as exc:  # noqa: BLE001 - the runtime answers per request; this is a last resort
            results = [{"ref": getattr(p.request, "ref", ""), "error": f"internal error: {exc}",
                        "error_type": "InternalError"} for p in items]
        finally:
            slots.release()
        metrics.batch_size[kind].observe(len(items))
        metrics.max_batch_seen = max(metrics.max_batch_seen, len(items))
        now = time.perf_counter()
        for p, res in zip(items, results, strict=True):
            metrics.count(metrics.requests, (kind, "error" if "error" in res else "ok"))
            metrics.latency[kind].observe(now - p.t0)
            if not p.future.done():
                p.future.set_result(res)

    async def batcher(queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + max_wait_ms / 1000
            while len(batch) < max_batch:
                remaining = deadline - loop.time()
                try:
                    batch.append(queue.get_nowait() if remaining <= 0 else
                                 await asyncio.wait_for(queue.get(), remaining))
                except (asyncio.QueueEmpty, TimeoutError):
                    break
            for kind in ENDPOINTS:
                items = [p for p in batch if p.kind == kind]
                if not items:
                    continue
                await slots.acquire()
                if in_flight == 1:
                    await run_batch(kind, items)
                else:
                    task = asyncio.create_task(run_batch(kind, items))
                    running.add(task)
                    task.add_done_callback(running.discard)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, runtime.base)
        except PromptregError as exc:
            state["load_error"] = str(exc)  # no model configured yet: loaded with the first request's version
        queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        state["queue"] = queue
        state["task"] = asyncio.create_task(batcher(queue))
        if capture is not None:
            capture.start()
        try:
            yield
        finally:
            state["task"].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state["task"]
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            while not queue.empty():
                p = queue.get_nowait()
                if not p.future.done():
                    p.future.set_result({"ref": getattr(p.request, "ref", ""), "error": "server shutting down",
                                         "error_type": "StoreUnavailableError"})
            executor.shutdown(wait=True)
            if capture is not None:
                await loop.run_in_executor(None, capture.close)   # the last rows are written before exit

    app = FastAPI(title="promptreg serving", lifespan=lifespan)
    app.state.metrics = metrics
    app.state.runtime = runtime

    def answer(endpoint: str, code: int, content: Any, headers: dict | None = None):
        metrics.count(metrics.http, (endpoint, code))
        return JSONResponse(content, status_code=code, headers=headers)

    def captured(kind: str, ts: str, reqs: list, results: list[dict]) -> None:
        """Give every result its request id; sample the good ones into the capturer (event loop thread)."""
        for req, res in zip(reqs, results, strict=True):
            rid = uuid.uuid4().hex
            res["request_id"] = rid
            if capture is None or "error" in res or req is None or not capture.sample():
                continue
            capture.offer(capture_row(kind, rid, ts, req, res))
            known[rid] = list(res.get("probs") or ())
            if len(known) > KNOWN_IDS:
                known.popitem(last=False)

    async def infer(kind: str, http_request: Request):
        principal, refused = await _principal(kind, http_request)   # before the body is read
        if refused is not None:
            return refused
        try:
            body = await http_request.json()
        except ValueError:
            return answer(kind, 400, {"error": "the body must be JSON: {\"requests\": [{\"ref\", \"text\"}, ...]}"})
        single = not (isinstance(body, dict) and "requests" in body)
        raw = [body] if single else body["requests"]
        if not isinstance(raw, list) or not raw:
            return answer(kind, 400, {"error": "'requests' must be a non-empty list of {ref, text} objects"})
        if len(raw) > max_queue:
            return answer(kind, 413, {"error": f"at most {max_queue} requests per call, got {len(raw)}"})
        queue: asyncio.Queue = state["queue"]
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        ts = _iso_now()
        slots: list[Any] = []  # per request: an error result (malformed: fails alone) or its future
        for r in raw:
            try:
                req = as_request(r, generation=kind == "generate")
                name = parse_ref(req.ref).name
                if principal is not None and not principal.grant.sees(name):
                    raise PermissionDeniedError(f"permission denied: {principal.name} may not use {name} "
                                                "(not in the token's prompts)")
                slots.append(req)
            except PromptregError as exc:
                denied = isinstance(exc, PermissionDeniedError)
                if single:
                    return answer(kind, 403 if denied else 400, {"error": str(exc)})
                ref = r.get("ref") if isinstance(r, dict) else None
                slots.append({"ref": ref if isinstance(ref, str) else "", "error": str(exc),
                              "error_type": "PermissionDeniedError" if denied else error_type(exc)})
                metrics.count(metrics.requests, (kind, "error"))
        pending = []
        for i, req in enumerate(slots):
            if isinstance(req, dict):
                continue
            p = _Pending(kind, req, loop.create_future(), t0)
            try:
                queue.put_nowait(p)
            except asyncio.QueueFull:
                for q in pending:
                    q.future.cancel()
                return answer(kind, 503, {"error": f"request queue full ({max_queue}); retry later"})
            pending.append(p)
            slots[i] = p.future
        reqs = [None if isinstance(s, dict) else p.request for s, p in zip(slots, _expand(slots, pending),
                                                                             strict=True)]
        results = [s if isinstance(s, dict) else await s for s in slots]
        captured(kind, ts, reqs, results)
        if single:
            res = results[0]
            code = 200 if "error" not in res else _STATUS.get(res.get("error_type"), 500)
            return answer(kind, code, res, {"X-Request-Id": res["request_id"]})
        return answer(kind, 200, {"results": results})

    @app.post("/v1/classify")
    async def classify(request: Request):
        return await infer("classify", request)

    @app.post("/v1/generate")
    async def generate(request: Request):
        return await infer("generate", request)

    async def _principal(kind: str, request: Request):
        """(the principal or None, a refusal answer or None)."""
        if authenticate is None:
            return None, None
        from starlette.concurrency import run_in_threadpool

        try:
            return await run_in_threadpool(authenticate, request.headers.get("authorization")), None
        except AuthenticationError as exc:
            return None, answer(kind, 401, {"error": str(exc)}, {"WWW-Authenticate": "Bearer"})
        except PromptregError as exc:      # the token store (database, registry server) did not answer
            return None, answer(kind, _STATUS.get(error_type(exc), 503), {"error": str(exc)})

    @app.post("/feedback")
    async def feedback(http_request: Request):
        principal, refused = await _principal("feedback", http_request)
        if refused is not None:
            return refused
        if principal is not None and principal.grant.role not in _WRITERS:
            return answer("feedback", 403, {"error": f"permission denied: {principal.name} may not send feedback "
                                                     f"(role {principal.grant.role}; needs contributor or higher)"})
        if capture is None:
            return answer("feedback", 409, {"error": "capture is off on this server (serve --capture-rate): "
                                                     "feedback has no captured request to join"})
        try:
            body = await http_request.json()
        except ValueError:
            return answer("feedback", 400, {"error": "the body must be JSON: {\"request_id\", \"label\"}"})
        single = not (isinstance(body, dict) and "feedback" in body)
        items = [body] if single else body["feedback"]
        if not isinstance(items, list) or not items or len(items) > max_queue:
            return answer("feedback", 400, {"error": f"'feedback' must be a list of 1 to {max_queue} "
                                                     "{request_id, label} objects"})
        rows = []
        for i, item in enumerate(items):
            problem = _feedback_problem(item, known)
            if problem:
                return answer("feedback", 400, {"error": problem if single else f"feedback[{i}]: {problem}"})
            rows.append({"request_id": item["request_id"], "label": item["label"], "ts": _iso_now()})
        stored = [capture.feedback(r) for r in rows]
        if not all(stored):
            return answer("feedback", 503, {"error": "capture queue full; retry later"})
        if single:
            return answer("feedback", 202, {"request_id": rows[0]["request_id"], "accepted": True})
        return answer("feedback", 202, {"accepted": len(rows)})

    @app.get("/healthz")
    async def healthz():
        if not runtime.loaded:
            metrics.count(metrics.http, ("healthz", 503))
            return JSONResponse({"status": "starting", "error": state["load_error"]}, status_code=503)
        base = runtime.loaded_base
        metrics.count(metrics.http, ("healthz", 200))
        return {"status": "ok", "base_model_fingerprint": base.fingerprint, "base_model": str(base.folder),
                "device": str(base.device), "loaded_versions": runtime.stats()["loaded_versions"],
                "alias_ttl_s": runtime.alias_ttl_s, "max_batch": max_batch, "max_wait_ms": max_wait_ms}

    @app.get("/metrics")
    async def prometheus(request: Request):
        _, refused = await _principal("metrics", request)
        if refused is not None:
            return refused
        queue = state["queue"]
        metrics.count(metrics.http, ("metrics", 200))
        return Response(render_metrics(metrics, runtime, queue.qsize() if queue is not None else 0, capture),
                        media_type=PROMETHEUS_CONTENT_TYPE)

    return app


def _expand(slots: list, pending: list) -> list:
    """Per slot: its _Pending (None for a request that failed validation)."""
    it = iter(pending)
    return [None if isinstance(s, dict) else next(it) for s in slots]


def _feedback_problem(item: Any, known: dict[str, list[str]]) -> str | None:
    """Why a feedback item is refused (None when it is fine)."""
    from promptreg.registry.captures import REQUEST_ID_RE

    if not isinstance(item, dict):
        return "a feedback item is an object {request_id, label}"
    unknown = set(item) - {"request_id", "label"}
    if unknown:
        return f"unknown feedback field(s): {', '.join(sorted(map(str, unknown)))} (expected request_id, label)"
    rid, label = item.get("request_id"), item.get("label")
    if not isinstance(rid, str) or not REQUEST_ID_RE.fullmatch(rid):
        return "'request_id' must be the 32-hex-digit id a classify/generate answer returned"
    if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_CHARS:
        return f"'label' must be a non-empty string of at most {MAX_LABEL_CHARS} characters"
    labels = known.get(rid)
    if labels and label not in labels:
        return f"label {label!r} is not one of the version's labels ({', '.join(labels)})"
    return None

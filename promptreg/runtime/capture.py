"""Traffic capture for ``promptreg serve``: sample answered requests into the artifact store.

The request path only decides (``sample()``: a seeded ``random.Random``; rate 1 always, 0 never) and
hands a small dict to a bounded in-memory queue (``offer()``; when the queue is full the row is dropped
and counted, serving never waits). A background flusher thread, every ``flush_s`` seconds and at close,
applies the redaction (``redact``: a callable taking the row, returning it redacted or None to drop it;
a hook that raises drops the row: nothing is captured unredacted), enforces ``max_bytes`` per row (the
longest text field is cut, UTF-8-safe, and the row marked ``truncated``; a row that still does not fit
is dropped), and writes each group of rows of one prompt version and UTC hour as ONE new object
(promptreg.registry.captures: ``captures/<prompt>/v<version>/date=YYYY-MM-DD/<HH>-<uuid>.jsonl``),
written whole (``ArtifactStore.put_object``), never appended to. Feedback (request id -> true label)
goes the same way to ``captures/_feedback/``. A failed write drops its rows, counted and logged once
per distinct error: capture never fails a request.

Invariants: every written line is a JSON object of at most ``max_bytes`` UTF-8 bytes (newline
excluded); the rows of one object share prompt, version, date and hour (those of ``ts``).
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import queue
import random
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

from promptreg.errors import InputError
from promptreg.registry.captures import encode_rows, feedback_key, rows_key

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_FLUSH_S = 5.0
MAX_ROWS_PER_OBJECT = 10_000
TEXT_FIELDS = ("text", "generated")
REDACTED = "[REDACTED]"
Redactor = Callable[[dict], "dict | None"]


@dataclass
class CaptureStats:
    offered: int = 0             # rows sampled on the request path
    dropped_queue_full: int = 0
    redacted_out: int = 0        # the hook returned None
    redact_failed: int = 0       # the hook raised (row dropped)
    truncated: int = 0
    too_large: int = 0           # still over max_bytes with empty text fields (dropped)
    write_failed: int = 0        # rows lost with a failed object write
    written: int = 0
    objects: int = 0
    feedback_written: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


# ----------------------------------------------------------------------------------- pure helpers
def load_hook(spec: str) -> Redactor:
    """``module:function`` -> the callable (InputError, one line, when it cannot be imported)."""
    module, sep, name = (spec or "").partition(":")
    if not sep or not module or not name:
        raise InputError(f"--capture-redact {spec!r}: expected MODULE:FUNCTION")
    try:
        fn = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise InputError(f"--capture-redact {spec!r}: cannot import {module}: {exc}") from None
    except AttributeError:
        raise InputError(f"--capture-redact {spec!r}: {module} has no {name}") from None
    if not callable(fn):
        raise InputError(f"--capture-redact {spec!r}: {name} is not callable")
    return fn


def regex_redactor(patterns: list[str]) -> Redactor:
    """Replace every match of any pattern in the text fields by ``[REDACTED]``."""
    try:
        compiled = [re.compile(p) for p in patterns]
    except re.error as exc:
        raise InputError(f"--capture-redact-regex: invalid pattern: {exc}") from None

    def redact(row: dict) -> dict:
        for f in TEXT_FIELDS:
            if isinstance(row.get(f), str):
                for rx in compiled:
                    row[f] = rx.sub(REDACTED, row[f])
        return row
    return redact


def chain(*hooks: Redactor | None) -> Redactor | None:
    hooks = tuple(h for h in hooks if h is not None)
    if not hooks:
        return None

    def redact(row: dict) -> dict | None:
        for h in hooks:
            row = h(row)
            if row is None:
                return None
        return row
    return redact


def _line(row: dict) -> bytes:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def fit(row: dict, max_bytes: int) -> dict | None:
    """The row within ``max_bytes`` serialized: unchanged, or its longest text field cut (``truncated``
    set), or None when even empty text fields do not fit."""
    size = len(_line(row))
    if size <= max_bytes:
        return row
    row = {**row, "truncated": True}
    for _ in range(8):
        size = len(_line(row))
        if size <= max_bytes:
            return row
        fields = [f for f in TEXT_FIELDS if isinstance(row.get(f), str) and row[f]]
        if not fields:
            return None
        f = max(fields, key=lambda k: len(_line({"v": row[k]})))
        raw = row[f].encode("utf-8")
        keep = max(0, len(raw) - (size - max_bytes) - 8)
        cut = raw[:keep].decode("utf-8", "ignore")
        row[f] = cut if len(cut) < len(row[f]) else row[f][:-1]
    return row if len(_line(row)) <= max_bytes else None


def _ts(row: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(row["ts"])


# ----------------------------------------------------------------------------------- the capturer
class Capturer:
    """Sample, redact, bound and write captured rows (see the module docstring)."""

    def __init__(self, store, *, rate: float, redact: Redactor | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 seed: int | None = None, flush_s: float = DEFAULT_FLUSH_S, max_queue: int = 100_000) -> None:
        if not 0 <= rate <= 1:
            raise InputError(f"--capture-rate must be between 0 and 1, got {rate}")
        if max_bytes < 256:
            raise InputError(f"--capture-max-bytes must be at least 256, got {max_bytes}")
        if flush_s <= 0:
            raise InputError("the capture flush interval must be positive")
        self.store, self.rate, self.redact, self.max_bytes = store, float(rate), redact, int(max_bytes)
        self.flush_s = float(flush_s)
        self.stats = CaptureStats()
        self._rng = random.Random(seed)
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._errors_seen: set[str] = set()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def sample(self) -> bool:
        """Whether to capture the next request (call it once per answered request, in arrival order)."""
        if self.rate >= 1:
            return True
        return self.rate > 0 and self._rng.random() < self.rate

    def offer(self, row: dict) -> bool:
        """Queue a captured row (``ts``: ISO-8601 UTC, ``prompt``, ``version`` set); False when dropped."""
        return self._put(("rows", row))

    def feedback(self, row: dict) -> bool:
        """Queue a feedback row ``{request_id, label, ts}``; False when dropped."""
        return self._put(("feedback", row))

    def _put(self, item) -> bool:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.stats.dropped_queue_full += 1
            return False
        if item[0] == "rows":
            self.stats.offered += 1
        return True

    # -- background flusher ------------------------------------------------------------------
    def start(self) -> Capturer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="promptreg-capture", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def close(self) -> None:
        """Stop the flusher and write what is queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        self.flush()

    def flush(self) -> int:
        """Write every queued row now (one object per prompt version and hour); rows written."""
        with self._flush_lock:
            items = []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            groups: dict[tuple, list[dict]] = {}
            for kind, row in items:
                prepared = self._prepare(row) if kind == "rows" else row
                if prepared is None:
                    continue
                hour = _ts(prepared).replace(minute=0, second=0, microsecond=0)
                key = (kind, prepared.get("prompt"), prepared.get("version"), hour)
                groups.setdefault(key, []).append(prepared)
            written = 0
            for (kind, prompt, version, hour), rows in groups.items():
                for i in range(0, len(rows), MAX_ROWS_PER_OBJECT):
                    chunk = rows[i:i + MAX_ROWS_PER_OBJECT]
                    key = rows_key(prompt, version, hour) if kind == "rows" else feedback_key(hour)
                    try:
                        self.store.put_object(key, encode_rows(chunk))
                    except Exception as exc:  # noqa: BLE001 - capture never fails serving; counted, logged once
                        self.stats.write_failed += len(chunk)
                        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
                        if msg not in self._errors_seen:
                            self._errors_seen.add(msg)
                            log.warning("capture: %d rows not written to %s: %s", len(chunk), key, msg)
                        continue
                    self.stats.objects += 1
                    if kind == "rows":
                        self.stats.written += len(chunk)
                        written += len(chunk)
                    else:
                        self.stats.feedback_written += len(chunk)
            return written

    def _prepare(self, row: dict) -> dict | None:
        if self.redact is not None:
            try:
                row = self.redact(dict(row))
            except Exception:  # noqa: BLE001 - a failing hook drops the row (never capture unredacted)
                self.stats.redact_failed += 1
                return None
            if row is None:
                self.stats.redacted_out += 1
                return None
            if not isinstance(row, dict) or not all(k in row for k in ("ts", "prompt", "version")):
                self.stats.redact_failed += 1
                return None
        out = fit(row, self.max_bytes)
        if out is None:
            self.stats.too_large += 1
        elif out is not row:
            self.stats.truncated += 1
        return out


__all__ = ["DEFAULT_FLUSH_S", "DEFAULT_MAX_BYTES", "CaptureStats", "Capturer", "chain", "fit", "load_hook",
           "regex_redactor"]

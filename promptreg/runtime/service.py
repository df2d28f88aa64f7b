"""``PromptRuntime``: one frozen base model, many registered soft prompts, mixed batches.

PEFT runs one prompt adapter per batch (huggingface/peft#759). The runtime loads the base model ONCE
(lazily, on first need) and answers batches whose requests each name their own version
(``NAME@ALIAS``, ``NAME:VERSION`` or ``NAME`` for the newest version): all good requests of one
``classify`` / ``generate`` call run as ONE :class:`promptreg.runtime.mixed.MixedRunner` batch, whatever
their versions and methods, with the same results as each request run alone.

Per-request errors. A request that cannot run (unknown name or alias, a version trained on another
base model, a tampered artifact, a generation prompt asked to classify, bad input) gets
``{"ref": ..., "error": "<one line>", "error_type": "NotFoundError"}`` in its slot; the other requests
of the call still run.

Alias resolution and bounded staleness. ``resolve(ref)`` asks the registry and caches the answer of a
moving reference (``NAME@ALIAS``, bare ``NAME``) for at most ``alias_ttl_s`` seconds: a promote or a
rollback takes effect for new requests at most ``alias_ttl_s`` seconds after it commits, without a
restart (``alias_ttl_s=0`` asks the registry on every call). ``NAME:VERSION`` is immutable (a version's
content never changes) and is cached without expiry.

Version cache. Built soft prompts (with their encoder and label token ids) are kept in an LRU keyed by
the artifact's sha256, bounded by count (``max_versions``) and by bytes (``max_bytes``: the sum of the
soft prompts' tensor bytes); the least recently used entries are evicted first (``stats()`` counts
hits, misses and evictions). Entries used by the call in progress stay alive for that call even when
evicted. An artifact is fetched through ``Registry.fetch_verified`` (sha256-checked) on every cache miss.

Thread safety: one lock serialises the model, the caches and the registry look-ups; callers may use
the runtime from several threads (the HTTP server runs it in a worker thread).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptreg.errors import InputError, PromptregError, error_type

DEFAULT_MAX_BYTES = 256 * 2**20
DEFAULT_MAX_NEW_TOKENS = 32
MAX_NEW_TOKENS_LIMIT = 1024


@dataclass
class PromptRequest:
    """One request: the version it names and its text (``max_new_tokens``: generation only)."""

    ref: str
    text: str
    max_new_tokens: int | None = None


@dataclass
class _Entry:
    """A built version kept in the LRU cache."""

    name: str
    version: int
    sha256: str
    soft_prompt: Any          # softprompt.methods.SoftPrompt on the base model's device
    encoder: Any              # softprompt.collate.Encoder
    task: str
    labels: list[str]
    answers: Any              # softprompt.collate.Answers (empty for generation)
    nbytes: int

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass
class RuntimeStats:
    cache_hits: int = 0
    cache_misses: int = 0
    cache_evictions: int = 0
    loaded_versions: int = 0
    loaded_bytes: int = 0
    alias_lookups: int = 0           # registry look-ups made to resolve references
    batches: int = 0                 # MixedRunner batches run
    batch_rows: int = 0              # rows in those batches
    requests_ok: int = 0
    requests_failed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        out.update(self.extra)
        return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, PromptregError):
        return first or type(exc).__name__
    return f"internal error: {type(exc).__name__}: {first}".rstrip(": ")


def _error(ref: Any, exc: BaseException) -> dict[str, Any]:
    return {"ref": ref if isinstance(ref, str) else str(ref), "error": _one_line(exc),
            "error_type": error_type(exc)}


def as_request(obj: Any, *, generation: bool) -> PromptRequest:
    """A :class:`PromptRequest` from a dict / dataclass (InputError, one line, when malformed)."""
    if isinstance(obj, PromptRequest):
        req = obj
    elif isinstance(obj, Mapping):
        unknown = set(obj) - {"ref", "text", "max_new_tokens"}
        if unknown:
            raise InputError(f"unknown request field(s): {', '.join(sorted(map(str, unknown)))} "
                             "(expected ref, text, max_new_tokens)")
        if "ref" not in obj or "text" not in obj:
            raise InputError("a request needs 'ref' (NAME@ALIAS or NAME:VERSION) and 'text'")
        req = PromptRequest(obj["ref"], obj["text"], obj.get("max_new_tokens"))
    else:
        raise InputError(f"a request is an object with 'ref' and 'text', got {type(obj).__name__}")
    if not isinstance(req.ref, str) or not req.ref:
        raise InputError("'ref' must be a non-empty string (NAME@ALIAS or NAME:VERSION)")
    if not isinstance(req.text, str):
        raise InputError(f"'text' must be a string, got {type(req.text).__name__}")
    if req.max_new_tokens is not None:
        if not generation:
            raise InputError("max_new_tokens is only for generate requests")
        n = req.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_NEW_TOKENS_LIMIT:
            raise InputError(f"max_new_tokens must be an integer between 0 and {MAX_NEW_TOKENS_LIMIT}, got {n!r}")
    return req


class PromptRuntime:
    """Serve registered soft prompts on one base model (see the module docstring).

    ``model``: a base-model folder or ``smollm2``; None: ``registry.settings.base_model``
    (``PROMPTREG_BASE_MODEL``), else the folder recorded in the first requested version's manifest
    when it exists."""

    def __init__(self, registry, model: str | Path | None = None, *, device: str = "auto", max_versions: int = 64,
                 max_bytes: int = DEFAULT_MAX_BYTES, alias_ttl_s: float = 2.0,
                 default_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, max_text_tokens: int = 256) -> None:
        if max_versions < 1:
            raise InputError(f"max_versions must be at least 1, got {max_versions}")
        if max_bytes < 0 or alias_ttl_s < 0:
            raise InputError("max_bytes and alias_ttl_s must not be negative")
        self.registry = registry
        settings = getattr(registry, "settings", None)
        self.model_arg = str(model) if model else getattr(settings, "base_model", None)
        self.device = device
        self.max_versions = int(max_versions)
        self.max_bytes = int(max_bytes)
        self.alias_ttl_s = float(alias_ttl_s)
        self.default_max_new_tokens = int(default_max_new_tokens)
        self.max_text_tokens = int(max_text_tokens)
        self.clock = time.monotonic   # replaceable in tests
        self._lock = threading.RLock()
        self._base = None
        self._runner = None
        self._refs: dict[str, tuple[Any, float]] = {}     # ref -> (VersionInfo, expires at)
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._cache_bytes = 0
        self._stats = RuntimeStats()

    # ----- base model ---------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._base is not None

    def base(self, hint=None):
        """The loaded base model (loaded on first call; ``hint``: a VersionInfo whose manifest may name it)."""
        with self._lock:
            if self._base is None:
                from promptreg.runtime.loader import load_base_model
                from promptreg.runtime.mixed import MixedRunner

                base = load_base_model(self._model_path(hint), device=self.device)
                self._runner = MixedRunner(base.model, base.tokenizer)
                self._base = base
            return self._base

    def _model_path(self, hint) -> str | Path:
        if self.model_arg:
            return self.model_arg
        if hint is not None:
            recorded = (self.registry.manifest(f"{hint.name}:{hint.version}").get("base_model") or {}).get(
                "name_or_path")
            if recorded and Path(recorded).is_dir():
                return recorded
        raise InputError("no base model to serve with: pass --model PATH (or 'smollm2') or set PROMPTREG_BASE_MODEL")

    @property
    def loaded_base(self):
        """The base model if loaded, else None (never loads, never waits for a running batch)."""
        return self._base

    @property
    def fingerprint(self) -> str | None:
        return self._base.fingerprint if self._base is not None else None

    # ----- references ---------------------------------------------------------------------------
    def resolve(self, ref: str):
        """The VersionInfo ``ref`` names now (moving references cached for at most ``alias_ttl_s``)."""
        from promptreg.refs import parse_ref

        parsed = parse_ref(ref)
        key = str(parsed)
        with self._lock:
            now = self.clock()
            hit = self._refs.get(key)
            if hit is not None and hit[1] > now:
                return hit[0]
            info = self.registry.show(parsed)
            self._stats.alias_lookups += 1
            ttl = math.inf if parsed.version is not None else self.alias_ttl_s
            if ttl > 0:
                self._refs[key] = (info, now + ttl)
            else:
                self._refs.pop(key, None)
            return info

    # ----- version cache ------------------------------------------------------------------------
    def _entry(self, info, in_call: dict[str, _Entry]) -> _Entry:
        """The built version (``in_call``: the entries of the call in progress, kept even if evicted)."""
        from promptreg.runtime.loader import check_compatible

        base = self.base(info)
        label = f"{info.name}:{info.version}"
        # refuse before fetching anything: the registry records each version's base-model fingerprint
        check_compatible({"base_model": {"fingerprint": info.base_model_fingerprint}}, base, label)
        entry = self._cache.get(info.sha256) or in_call.get(info.sha256)
        if entry is not None:
            in_call[info.sha256] = entry
            if info.sha256 in self._cache:
                self._cache.move_to_end(info.sha256)
            self._stats.cache_hits += 1
            return entry
        self._stats.cache_misses += 1
        entry = self._build(info, base, label)
        self._cache[info.sha256] = in_call[info.sha256] = entry
        self._cache_bytes += entry.nbytes
        self._evict()
        return entry

    def _fetch(self, label: str) -> tuple[Path, dict]:
        """The version's sha256-verified folder and its manifest."""
        from promptreg.artifact.manifest import MANIFEST_FILE

        _, folder = self.registry.fetch_verified(label)
        try:
            return Path(folder), json.loads((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{label}: cannot read its manifest: {exc}") from None

    def _build(self, info, base, label: str) -> _Entry:
        from promptreg.runtime.loader import load_soft_prompt

        folder, manifest = self._fetch(label)
        loaded = load_soft_prompt(folder, manifest, base, label=label, sha256=info.sha256,
                                  max_text_tokens=self.max_text_tokens)
        soft = loaded.soft_model.soft_prompt
        soft.eval()
        nbytes = sum(t.numel() * t.element_size() for t in list(soft.parameters()) + list(soft.buffers()))
        return _Entry(info.name, info.version, info.sha256, soft, loaded.encoder, loaded.task, list(loaded.labels),
                      loaded.answers, int(nbytes))

    def _evict(self) -> None:
        while self._cache and (len(self._cache) > self.max_versions or self._cache_bytes > self.max_bytes):
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
            self._stats.cache_evictions += 1

    def cached_versions(self) -> list[str]:
        """``name:version`` of the cached versions, least recently used first."""
        with self._lock:
            return [e.label for e in self._cache.values()]

    def stats(self) -> dict[str, Any]:
        """Counters (lock-free: safe to call from an event loop while a batch runs)."""
        self._stats.loaded_versions = len(self._cache)
        self._stats.loaded_bytes = self._cache_bytes
        return self._stats.to_dict()

    # ----- inference ----------------------------------------------------------------------------
    def _prepare(self, requests: Iterable[Any], *, generation: bool):
        """Per request: (request, entry) or an error result; errors never stop the others."""
        prepared: list[tuple[PromptRequest, _Entry] | dict[str, Any]] = []
        in_call: dict[str, _Entry] = {}
        for raw in requests:
            ref = raw.get("ref") if isinstance(raw, Mapping) else getattr(raw, "ref", raw)
            try:
                req = as_request(raw, generation=generation)
                entry = self._entry(self.resolve(req.ref), in_call)
                if not generation and entry.task != "classification":
                    raise InputError(f"{entry.label} is a {entry.task} prompt: it has no labels to classify with")
                prepared.append((req, entry))
            except Exception as exc:  # noqa: BLE001 - one bad request fails alone
                prepared.append(_error(ref, exc))
        return prepared

    @staticmethod
    def _result(req: PromptRequest, entry: _Entry) -> dict[str, Any]:
        return {"ref": req.ref, "name": entry.name, "version": entry.version, "sha256": entry.sha256}

    def _finish(self, prepared, good: list[int], outputs, fill) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = [item if isinstance(item, dict) else None for item in prepared]
        if outputs is not None:
            for i, out in zip(good, outputs, strict=True):
                req, entry = prepared[i]
                results[i] = fill(self._result(req, entry), entry, req, out)
        self._stats.requests_ok += sum(1 for r in results if "error" not in r)
        self._stats.requests_failed += sum(1 for r in results if "error" in r)
        return results

    def _run_batch(self, prepared, good: list[int], fn):
        """Run the good rows as one MixedRunner batch; a failure of the batch fails those rows."""
        try:
            outputs = fn()
        except Exception as exc:  # noqa: BLE001
            for i in good:
                req, _ = prepared[i]
                prepared[i] = _error(req.ref, exc)
            return None
        self._stats.batches += 1
        self._stats.batch_rows += len(good)
        return outputs

    def classify(self, requests: Iterable[Any]) -> list[dict[str, Any]]:
        """Per request ``{"ref", "name", "version", "sha256", "label", "probs": {label: p}}`` or an error."""
        import torch

        from promptreg.runtime.mixed import MixedRow

        with self._lock:
            prepared = self._prepare(requests, generation=False)
            good = [i for i, item in enumerate(prepared) if not isinstance(item, dict)]
            rows, answers = [], []
            for i in good:
                req, entry = prepared[i]
                rows.append(MixedRow(entry.soft_prompt, *entry.encoder.prompt(req.text)))
                answers.append(entry.answers)

            def run():
                logits = self._runner.label_scores(rows, answers)
                return [torch.softmax(lg.float(), -1).cpu().tolist() for lg in logits]

            outputs = self._run_batch(prepared, good, run) if good else []

            def fill(res, entry, req, probs):
                best = max(range(len(probs)), key=probs.__getitem__)
                res.update(label=entry.labels[best], probs=dict(zip(entry.labels, probs, strict=True)))
                return res

            return self._finish(prepared, good, outputs, fill)

    def generate(self, requests: Iterable[Any]) -> list[dict[str, Any]]:
        """Greedy continuations: per request ``{"ref", "name", "version", "sha256", "text"}`` or an error.
        The batch runs ``max(max_new_tokens)`` steps; each request keeps its own first ``max_new_tokens``
        tokens (greedy decoding is prefix-stable, so this equals running it alone)."""
        from promptreg.runtime.mixed import MixedRow

        with self._lock:
            prepared = self._prepare(requests, generation=True)
            good = [i for i, item in enumerate(prepared) if not isinstance(item, dict)]
            rows, limits = [], []
            for i in good:
                req, entry = prepared[i]
                rows.append(MixedRow(entry.soft_prompt, *entry.encoder.prompt(req.text)))
                limits.append(self.default_max_new_tokens if req.max_new_tokens is None else req.max_new_tokens)
            tok = self._base.tokenizer if self._base is not None else None

            def run():
                new = self._runner.generate(rows, max_new_tokens=max(limits), eos_token_id=tok.eos_token_id)
                return [ids[:n] for ids, n in zip(new, limits, strict=True)]

            outputs = self._run_batch(prepared, good, run) if good else []

            def fill(res, entry, req, ids):
                res.update(text=tok.decode(ids, skip_special_tokens=True), tokens=len(ids))
                return res

            return self._finish(prepared, good, outputs, fill)

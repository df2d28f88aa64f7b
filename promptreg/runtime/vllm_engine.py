"""Registered input-level soft prompts served by vLLM, through its ``prompt_embeds`` input.

vLLM dropped prompt adapters (vllm#13981); what remains is per-request prompt embeddings
(``enable_prompt_embeds``). :class:`VllmRuntime` is :class:`promptreg.runtime.service.PromptRuntime`
(same references, alias TTL, LRU version cache keyed by sha256, sha256-verified fetches, per-request
errors, same response shapes) with vLLM doing the forward passes:

- a request's version is resolved through the registry (moving references cached ``alias_ttl_s``);
- only input-level versions run (prompt tuning, P-tuning, any method whose ``SoftPrompt.kind`` is
  ``"input"``, read from the registry's record and again from the fetched manifest); prefix tuning and
  ID-SPAM are refused with one line naming promptreg's own runtime, which serves them;
- the row ``[left text | soft prompt | template + text]`` is built as ``[T, H]`` embeddings with the base
  model's input embedding matrix (runtime.prompt_embeds; the version's ``prompt()`` rows are computed
  once per version and cached with it) and sent as ``prompt_embeds``;
- classification: one step with ``logprob_token_ids`` = the version's label tokens; ``probs`` is the
  softmax over those log-probabilities (= the softmax over the label logits: log-softmax only adds a
  constant), as the own runtime computes it;
- generation: greedy (temperature 0, no penalties), stopping after the tokenizer's EOS only (vLLM's own
  EOS / generation-config stops are switched off so the stop rule is the own runtime's), the EOS itself
  dropped, the text decoded with the base model's tokenizer as the own runtime does.

All good requests of one call go to vLLM together: an in-process engine schedules them in its
continuous batches (mixed versions in one batch: each row carries its own embeddings); a remote
OpenAI-compatible server gets them as concurrent Completions requests.

Two backends, one contract (``verify``, ``label_logprobs``, ``greedy``):

- :class:`InProcessVllm`: a ``vllm.LLM`` in this process (``InProcessVllm.start(folder)`` makes one with
  ``enable_prompt_embeds=True``, or pass your own ``LLM``);
- :class:`OpenAIVllm`: a running ``vllm serve MODEL --enable-prompt-embeds`` reached over HTTP (its
  Completions API takes ``prompt_embeds`` as base64 of ``torch.save(tensor)``; this client only saves).

The base model is verified before any request runs: in-process, the folder vLLM loaded is fingerprinted
(promptreg.fingerprints.model) and must equal the fingerprint of the folder whose embeddings and tokenizer
are used; remote, the server's model root is fingerprinted when it is a readable folder here, and in every
case a probe text is scored once from token ids (the server's own embedding) and once from our prompt
embeddings: the two must agree, or the embeddings belong to another model. A version whose recorded base
fingerprint differs is refused per request (IntegrityError), as in the own runtime.

vLLM is imported lazily, only by the backends: this module imports without vLLM installed.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from promptreg.errors import InputError, IntegrityError, StoreUnavailableError
from promptreg.runtime.prompt_embeds import build_prompt_embeds, refuse_unless_input
from promptreg.runtime.service import DEFAULT_MAX_BYTES, DEFAULT_MAX_NEW_TOKENS, PromptRuntime, _Entry, _error

PROBE_TEXT = "The quick brown fox jumps over the lazy dog. A soft prompt is a sequence of vectors"
PROBE_ATOL = 1e-3      # |logprob(token ids) - logprob(our embeddings)| on the probe's top tokens


def _greedy_params(**extra) -> dict[str, Any]:
    """Greedy decoding with nothing that would change the argmax (generation-config defaults overridden)."""
    return {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, **extra}


def _verify_fingerprint(folder: Path, base, what: str) -> None:
    from promptreg.fingerprints.model import model_fingerprint

    got = model_fingerprint(folder).fingerprint
    if got != base.fingerprint:
        raise IntegrityError(f"{what} {folder} has fingerprint {got[:12]}, but the embeddings and tokenizer come "
                             f"from {base.folder} ({base.fingerprint[:12]}): refusing to serve a foreign base model")


class InProcessVllm:
    """A ``vllm.LLM`` in this process, driven by one engine thread: calls from any number of threads are
    added to the running engine as they come and scheduled in its continuous batches (a call does not
    wait for another call's rows to finish). Uses ``LLM._add_completion_requests`` (what ``LLM.generate``
    itself runs, vllm 0.32) and ``llm_engine.step()``."""

    name = "vllm"
    _STOP = object()

    def __init__(self, llm) -> None:
        import queue

        self.llm = llm
        self.config = llm.llm_engine.model_config
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="promptreg-vllm-engine", daemon=True)
        self._thread.start()

    def submit(self, prompts: list, params: list) -> list:
        """vLLM ``RequestOutput``s (final) of ``prompts`` (vLLM prompt dicts), in order; thread-safe."""
        from concurrent.futures import Future

        if not prompts:
            return []
        if self._closed:
            raise StoreUnavailableError("the vLLM engine is closed")
        fut: Future = Future()
        self._inbox.put((list(prompts), list(params), fut))
        return fut.result()

    def _loop(self) -> None:
        import queue

        engine = self.llm.llm_engine
        owners: dict[str, tuple[list, int]] = {}   # external request id -> ([future, outputs, left], index)

        def fail_all(exc: BaseException) -> None:
            for state, _ in owners.values():
                if not state[0].done():
                    state[0].set_exception(exc)
            owners.clear()

        while True:
            try:
                item = self._inbox.get(block=not owners)
            except queue.Empty:
                item = None
            while item is not None:
                if item is self._STOP:
                    fail_all(StoreUnavailableError("the vLLM engine was closed"))
                    return
                prompts, params, fut = item
                try:
                    ids = self.llm._add_completion_requests(prompts, params, use_tqdm=False)
                except Exception as exc:  # noqa: BLE001 - a rejected call fails alone
                    fut.set_exception(exc)
                else:
                    # the ids returned are internal ("<external>-<8 random chars>"); outputs carry the external id
                    state = [fut, [None] * len(ids), len(ids)]
                    owners.update({rid.rsplit("-", 1)[0]: (state, j) for j, rid in enumerate(ids)})
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    item = None
            if not owners:
                continue
            try:
                outs = engine.step()
            except Exception as exc:  # noqa: BLE001 - the engine failed: every call in flight fails
                fail_all(exc)
                continue
            for out in outs:
                if not out.finished or out.request_id not in owners:
                    continue
                state, j = owners.pop(out.request_id)
                state[1][j] = out
                state[2] -= 1
                if state[2] == 0:
                    state[0].set_result(state[1])

    @classmethod
    def start(cls, model: str | Path, *, dtype: str = "float32", max_model_len: int = 2048,
              kv_cache_memory_bytes: int | None = None, **llm_kwargs) -> InProcessVllm:
        """An ``LLM`` on ``model`` (a folder) with prompt embeddings enabled. ``kv_cache_memory_bytes``:
        the KV cache size (on CPU, vLLM otherwise reserves a fraction of the machine's memory)."""
        from vllm import LLM

        kw = dict(llm_kwargs)
        if kv_cache_memory_bytes is not None:
            kw["kv_cache_memory_bytes"] = int(kv_cache_memory_bytes)
        kw.setdefault("enforce_eager", True)
        return cls(LLM(model=str(model), enable_prompt_embeds=True, dtype=dtype, max_model_len=int(max_model_len),
                       **kw))

    @property
    def model_folder(self) -> Path | None:
        folder = Path(str(self.config.model))
        return folder if folder.is_dir() else None

    @property
    def max_model_len(self) -> int:
        return int(self.config.max_model_len)

    def describe(self) -> str:
        return f"in-process vLLM ({self.config.dtype}, max_model_len {self.max_model_len})"

    def verify(self, base) -> None:
        if not getattr(self.config, "enable_prompt_embeds", False):
            raise InputError("the vLLM engine was started without enable_prompt_embeds=True")
        if int(self.config.get_hidden_size()) != base.dims.hidden_size:
            raise IntegrityError(f"vLLM's model has hidden size {self.config.get_hidden_size()}, "
                                 f"{base.folder} has {base.dims.hidden_size}")
        folder = self.model_folder
        if folder is None:
            raise IntegrityError(f"vLLM loaded {self.config.model!r}, which is not a local folder: its fingerprint "
                                 "cannot be verified (start vLLM on the base model's folder)")
        _verify_fingerprint(folder, base, "vLLM's model")

    def _run(self, embeds, params) -> list:
        return self.submit([{"prompt_embeds": e} for e in embeds], params)

    def label_logprobs(self, embeds, label_ids: list[list[int]]) -> list[list[float]]:
        from vllm import SamplingParams

        params = [SamplingParams(max_tokens=1, logprob_token_ids=list(ids), detokenize=False,
                                 **_greedy_params()) for ids in label_ids]
        outs = self._run(embeds, params)
        return [[float(out.outputs[0].logprobs[0][t].logprob) for t in ids]
                for out, ids in zip(outs, label_ids, strict=True)]

    def greedy(self, embeds, limits: list[int], eos: int | None) -> list[list[int]]:
        from vllm import SamplingParams

        stop = [] if eos is None else [int(eos)]
        params = [SamplingParams(max_tokens=n, ignore_eos=True, stop_token_ids=stop, detokenize=False,
                                 **_greedy_params()) for n in limits]
        return [list(out.outputs[0].token_ids) for out in self._run(embeds, params)]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(self._STOP)
        self._thread.join(timeout=60)
        shutdown = getattr(self.llm, "shutdown", None) or getattr(self.llm.llm_engine, "shutdown", None)
        if callable(shutdown):
            shutdown()


class OpenAIVllm:
    """A running vLLM OpenAI-compatible server (``vllm serve FOLDER --enable-prompt-embeds``), reached at
    ``url`` (``http://127.0.0.1:8000``); ``api_key``: its ``--api-key``; ``model``: the served model name
    (None: the server's only model). Requests of one call are sent concurrently (``concurrency``)."""

    name = "vllm-openai"

    def __init__(self, url: str, *, api_key: str | None = None, model: str | None = None,
                 timeout_s: float = 120.0, concurrency: int = 64) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.concurrency = max(1, int(concurrency))
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="promptreg-vllm-http")
        models = self._call("GET", "/v1/models").get("data") or []
        if model is None and len(models) != 1:
            raise InputError(f"{self.url} serves {len(models)} models: name one (served model name)")
        entry = next((m for m in models if model is None or m.get("id") == model), None)
        if entry is None:
            raise InputError(f"{self.url} does not serve {model!r} (it serves "
                             f"{', '.join(str(m.get('id')) for m in models)})")
        self.model = str(entry["id"])
        self.root = entry.get("root")
        self._max_model_len = entry.get("max_model_len")
        self.verified = "not yet"

    @property
    def model_folder(self) -> Path | None:
        folder = Path(str(self.root)) if self.root else None
        return folder if folder is not None and folder.is_dir() else None

    @property
    def max_model_len(self) -> int | None:
        return int(self._max_model_len) if self._max_model_len else None

    def describe(self) -> str:
        return f"vLLM server {self.url} (model {self.model}; base model verified by {self.verified})"

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read().decode())
                detail = (detail.get("error") or {}).get("message") if isinstance(detail.get("error"), dict) \
                    else detail.get("error") or detail.get("message") or detail
            except (ValueError, AttributeError):
                detail = exc.reason
            text = " ".join(str(detail).split())[:300]
            raise (InputError if exc.code < 500 else StoreUnavailableError)(
                f"vLLM server {self.url}{path} answered {exc.code}: {text}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise StoreUnavailableError(f"vLLM server {self.url} unreachable: {reason}") from None

    @staticmethod
    def encode(tensor) -> str:
        """base64 of ``torch.save(tensor)``: the Completions API's ``prompt_embeds`` encoding."""
        import torch

        buf = io.BytesIO()
        torch.save(tensor.detach().cpu().contiguous(), buf)
        return base64.b64encode(buf.getvalue()).decode("ascii")

    def _complete(self, body: dict) -> dict:
        out = self._call("POST", "/v1/completions", {"model": self.model, **body})
        choices = out.get("choices") or []
        if len(choices) != 1:
            raise StoreUnavailableError(f"vLLM server {self.url}: expected one completion, got {len(choices)}")
        return choices[0]

    def _top(self, body: dict, ids: list[int] | None, k: int) -> dict[int, float]:
        extra = {"logprob_token_ids": ids} if ids else {}
        choice = self._complete({**body, "max_tokens": 1, "logprobs": k, "return_tokens_as_token_ids": True,
                                 **extra, **_greedy_params()})
        top = ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}
        return {int(tok.split(":", 1)[1]): float(lp) for tok, lp in top.items()}

    def verify(self, base) -> None:
        folder = self.model_folder
        if folder is not None:
            _verify_fingerprint(folder, base, "the vLLM server's model")
        ids = base.tokenizer(PROBE_TEXT)["input_ids"]
        by_ids = self._top({"prompt": ids}, None, 5)
        by_embeds = self._top({"prompt_embeds": self.encode(build_prompt_embeds(base.weight, ids, None, None))},
                              None, 5)
        shared = set(by_ids) & set(by_embeds)
        worst = max((abs(by_ids[t] - by_embeds[t]) for t in shared), default=math.inf)
        if not shared or max(by_ids, key=by_ids.get) != max(by_embeds, key=by_embeds.get) or worst > PROBE_ATOL:
            raise IntegrityError(f"the vLLM server {self.url} ({self.model}) scores a probe text differently from "
                                 f"its token ids and from {base.folder}'s embeddings (max |diff| {worst:.3g}): it "
                                 "serves another base model")
        self.verified = "fingerprint + embeddings probe" if folder is not None else "embeddings probe"

    def label_logprobs(self, embeds, label_ids: list[list[int]]) -> list[list[float]]:
        def one(e, ids):
            top = self._top({"prompt_embeds": self.encode(e)}, list(ids), len(ids))
            missing = [t for t in ids if t not in top]
            if missing:
                raise StoreUnavailableError(f"vLLM server {self.url} returned no log-probability for {missing}")
            return [top[t] for t in ids]

        return list(self._pool.map(one, embeds, label_ids))

    def greedy(self, embeds, limits: list[int], eos: int | None) -> list[list[int]]:
        stop = [] if eos is None else [int(eos)]

        def one(e, n):
            choice = self._complete({"prompt_embeds": self.encode(e), "max_tokens": n, "ignore_eos": True,
                                     "stop_token_ids": stop, "return_token_ids": True, **_greedy_params()})
            return [int(t) for t in choice.get("token_ids") or []]

        return list(self._pool.map(one, embeds, limits))

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class VllmRuntime(PromptRuntime):
    """:class:`PromptRuntime` whose forward passes run on vLLM (see the module docstring).

    ``backend``: an :class:`InProcessVllm` or :class:`OpenAIVllm`. ``model``: the base-model folder whose
    tokenizer and embedding matrix build the prompts (None: settings ``base_model``, else the folder the
    backend loaded when it is readable here); it must have the fingerprint of what vLLM loaded.

    Calls may come from several threads at once: the runtime lock covers resolving and building rows only,
    the engine call runs outside it, so concurrent calls share vLLM's continuous batches (the HTTP server
    keeps up to ``concurrent_calls`` batches in flight)."""

    concurrent_calls = 8

    def __init__(self, registry, backend, model: str | Path | None = None, *, max_versions: int = 64,
                 max_bytes: int = DEFAULT_MAX_BYTES, alias_ttl_s: float = 2.0,
                 default_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, max_text_tokens: int = 256) -> None:
        super().__init__(registry, model, device="vllm", max_versions=max_versions, max_bytes=max_bytes,
                         alias_ttl_s=alias_ttl_s, default_max_new_tokens=default_max_new_tokens,
                         max_text_tokens=max_text_tokens)
        self.backend = backend
        if not self.model_arg and backend.model_folder is not None:
            self.model_arg = str(backend.model_folder)
        self._stats.extra["engine"] = backend.name

    # ----- base model: embeddings + tokenizer here, weights in vLLM ------------------------------
    def base(self, hint=None):
        with self._lock:
            if self._base is None:
                from promptreg.runtime.prompt_embeds import load_embedding_base

                base = load_embedding_base(self._model_path(hint))
                base.device = self.backend.describe()
                self.backend.verify(base)
                base.device = self.backend.describe()
                self._base = base
            return self._base

    def _entry(self, info, in_call: dict[str, _Entry]) -> _Entry:
        refuse_unless_input(info.method, f"{info.name}:{info.version}")  # before anything is fetched
        return super()._entry(info, in_call)

    def _build(self, info, base, label: str) -> _Entry:
        from promptreg.runtime.loader import check_compatible, soft_prompt_from_folder, task_parts

        folder, manifest = self._fetch(label)
        refuse_unless_input(manifest.get("method", ""), label)
        check_compatible(manifest, base, label)
        soft = soft_prompt_from_folder(folder, manifest, base.dims, label=label)
        import torch

        with torch.no_grad():
            prompt = soft.prompt().detach().to(torch.float32).clone()  # [N, H], computed once per version
        encoder, task, labels, ids = task_parts(manifest, base.tokenizer, soft.input_slots, label=label,
                                                max_text_tokens=self.max_text_tokens)
        return _Entry(info.name, info.version, info.sha256, prompt, encoder, task, labels, ids,
                      int(prompt.numel() * prompt.element_size()))

    # ----- inference ----------------------------------------------------------------------------
    def prompt_embeds(self, ref: str, text: str):
        """``[T, H]`` float32 prompt embeddings of ``text`` with version ``ref`` (for your own vLLM calls:
        ``llm.generate([{"prompt_embeds": e}], ...)``), and the resolved version's label token ids."""
        with self._lock:
            (item,) = self._prepare([{"ref": ref, "text": text}], generation=True)
            if isinstance(item, dict):
                from promptreg import errors

                cls = getattr(errors, item["error_type"], errors.PromptregError)
                raise cls(item["error"])
            req, entry = item
            return self._embeds(req, entry), list(entry.label_ids)

    def _embeds(self, req, entry):
        ids, virtual = entry.encoder.prompt(req.text)
        return build_prompt_embeds(self._base.weight, ids, virtual, entry.soft_prompt)

    def _rows(self, prepared, new_tokens):
        """Embeddings of the good rows (a row too long for vLLM's context fails alone)."""
        good, embeds = [], []
        limit = self.backend.max_model_len
        for i, item in enumerate(prepared):
            if isinstance(item, dict):
                continue
            req, entry = item
            try:
                e = self._embeds(req, entry)
                need = e.shape[0] + max(1, new_tokens(req))
                if limit is not None and need > limit:
                    raise InputError(f"{entry.label}: prompt of {e.shape[0]} tokens + {max(1, new_tokens(req))} new "
                                     f"tokens exceeds vLLM's max_model_len {limit}")
            except Exception as exc:  # noqa: BLE001 - one bad request fails alone
                prepared[i] = _error(req.ref, exc)
                continue
            good.append(i)
            embeds.append(e)
        return good, embeds

    def classify(self, requests) -> list[dict[str, Any]]:
        """As :meth:`PromptRuntime.classify`, on vLLM (label-token log-probabilities)."""
        with self._lock:
            prepared = self._prepare(requests, generation=False)
            good, embeds = self._rows(prepared, lambda req: 1)
            label_ids = [prepared[i][1].label_ids for i in good]
        outputs = self._run_batch(prepared, good, lambda: self.backend.label_logprobs(embeds, label_ids)) \
            if good else []

        def fill(res, entry, req, logprobs):
            top = max(logprobs)
            weights = [math.exp(lp - top) for lp in logprobs]
            total = sum(weights)
            probs = [w / total for w in weights]
            best = max(range(len(probs)), key=probs.__getitem__)
            res.update(label=entry.labels[best], probs=dict(zip(entry.labels, probs, strict=True)))
            return res

        with self._lock:
            return self._finish(prepared, good, outputs, fill)

    def generate(self, requests) -> list[dict[str, Any]]:
        """As :meth:`PromptRuntime.generate`, on vLLM (greedy, stops after the tokenizer's EOS)."""
        with self._lock:
            prepared = self._prepare(requests, generation=True)

            def limit(req):
                return self.default_max_new_tokens if req.max_new_tokens is None else req.max_new_tokens

            good, embeds = self._rows(prepared, limit)
            limits = [limit(prepared[i][0]) for i in good]
        tok = self._base.tokenizer if self._base is not None else None
        eos = tok.eos_token_id if tok is not None else None

        def run():
            todo = [j for j, n in enumerate(limits) if n > 0]  # vLLM needs max_tokens >= 1
            new = self.backend.greedy([embeds[j] for j in todo], [limits[j] for j in todo], eos) if todo else []
            out: list[list[int]] = [[] for _ in limits]
            for j, ids in zip(todo, new, strict=True):
                out[j] = ids[:-1] if ids and eos is not None and ids[-1] == eos else ids
            return out

        outputs = self._run_batch(prepared, good, run) if good else []

        def fill(res, entry, req, ids):
            res.update(text=tok.decode(ids, skip_special_tokens=True), tokens=len(ids))
            return res

        with self._lock:
            return self._finish(prepared, good, outputs, fill)

    def close(self) -> None:
        self.backend.close()


def start_vllm_runtime(registry, model: str | Path | None, *, url: str | None = None, api_key: str | None = None,
                       served_model: str | None = None, dtype: str = "float32", max_model_len: int = 2048,
                       kv_cache_bytes: int | None = None, **runtime_kw) -> VllmRuntime:
    """A :class:`VllmRuntime` on an in-process engine started on ``model`` (``url`` None) or on the vLLM
    server at ``url``; the base model is loaded and verified before it returns (``promptreg serve
    --engine vllm``)."""
    import importlib.util

    from promptreg.runtime.loader import resolve_model_path

    model = model or getattr(getattr(registry, "settings", None), "base_model", None)
    if url:
        backend = OpenAIVllm(url, api_key=api_key, model=served_model)
    else:
        if importlib.util.find_spec("vllm") is None:
            raise InputError("vLLM is not installed in this environment: run 'make vllm-venv' and use "
                             ".venv-vllm/bin/promptreg, or pass --vllm-url of a running vLLM server")
        if not model:
            raise InputError("the vLLM engine needs the base model: pass --model PATH (or 'smollm2') or set "
                             "PROMPTREG_BASE_MODEL")
        backend = InProcessVllm.start(resolve_model_path(model), dtype=dtype, max_model_len=max_model_len,
                                      kv_cache_memory_bytes=kv_cache_bytes)
    runtime = VllmRuntime(registry, backend, model, **runtime_kw)
    try:
        runtime.base()
    except BaseException:
        runtime.close()
        raise
    return runtime

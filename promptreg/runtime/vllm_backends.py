"""The two ways promptreg talks to vLLM, behind one contract (``verify(base)``, ``label_logprobs(embeds,
label_ids)``, ``greedy(embeds, limits, eos)``, ``model_folder``, ``max_model_len``, ``describe()``,
``close()``), used by :class:`promptreg.runtime.vllm_engine.VllmRuntime`:

- :class:`InProcessVllm`: a ``vllm.LLM`` in this process, driven by one engine thread so that calls from
  any thread join its continuous batches;
- :class:`OpenAIVllm`: a running vLLM OpenAI-compatible server (``--enable-prompt-embeds``), reached over
  HTTP; a call's rows go as concurrent Completions requests.

Invariants: greedy decoding with nothing that could move the argmax (temperature 0, no penalties, the
server's generation-config defaults overridden); classification asks for exactly the label tokens'
log-probabilities; the base model is verified (fingerprint of what vLLM loaded, and for a server an
embeddings probe) before the runtime serves anything. vLLM is imported only inside methods, so this module
imports without it. This client only writes prompt embeddings with ``torch.save`` (the server's encoding);
it never loads a pickle.
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
from promptreg.runtime.prompt_embeds import build_prompt_embeds

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
        # the engine core runs in child processes: stop them now (LLM has no shutdown of its own; left to
        # interpreter exit, multiprocessing would wait for them before vLLM's finalizers stop them)
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if callable(getattr(core, "shutdown", None)):
            core.shutdown()


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

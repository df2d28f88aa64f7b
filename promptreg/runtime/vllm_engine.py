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
  constant), as the own runtime computes it. A version whose answers are several tokens is refused per
  request with one line (scoring them takes a forward per label, not one request; promptreg's own
  runtime serves it);
- generation: greedy (temperature 0, no penalties), stopping after the tokenizer's EOS only (vLLM's own
  EOS / generation-config stops are switched off so the stop rule is the own runtime's), the EOS itself
  dropped, the text decoded with the base model's tokenizer as the own runtime does.

All good requests of one call go to vLLM together: an in-process engine schedules them in its
continuous batches (mixed versions in one batch: each row carries its own embeddings); a remote
OpenAI-compatible server gets them as concurrent Completions requests.

Two backends, one contract (``verify``, ``label_logprobs``, ``greedy``; runtime.vllm_backends, re-exported here):

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

import math
from pathlib import Path
from typing import Any

from promptreg.errors import InputError
from promptreg.runtime.prompt_embeds import build_prompt_embeds, refuse_unless_input
from promptreg.runtime.service import DEFAULT_MAX_BYTES, DEFAULT_MAX_NEW_TOKENS, PromptRuntime, _Entry, _error
from promptreg.runtime.vllm_backends import InProcessVllm, OpenAIVllm

__all__ = ["InProcessVllm", "OpenAIVllm", "VllmRuntime", "start_vllm_runtime"]


def _refuse_multi_token(entry: _Entry) -> None:
    if not entry.answers.single_token:
        raise InputError(f"{entry.label}: its labels' answers are several tokens, which vLLM cannot score in one "
                         f"request; serve it with promptreg's own runtime (--engine promptreg)")


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
                self.backend.verify(base)
                base.device = self.backend.describe()
                self._base = base
            return self._base

    def _entry(self, info, in_call: dict[str, _Entry]) -> _Entry:
        refuse_unless_input(info.method, f"{info.name}:{info.version}")  # before anything is fetched
        return super()._entry(info, in_call)

    def _build(self, info, base, label: str) -> _Entry:
        import torch

        from promptreg.runtime.loader import check_compatible, soft_prompt_from_folder, task_parts

        folder, manifest = self._fetch(label)
        refuse_unless_input(manifest.get("method", ""), label)
        check_compatible(manifest, base, label)
        soft = soft_prompt_from_folder(folder, manifest, base.dims, label=label)
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
            _refuse_multi_token(entry)
            return self._embeds(req, entry), list(entry.answers.first)

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
            for i, item in enumerate(prepared):
                if not isinstance(item, dict) and not item[1].answers.single_token:
                    try:
                        _refuse_multi_token(item[1])
                    except InputError as exc:
                        prepared[i] = _error(item[0].ref, exc)
            good, embeds = self._rows(prepared, lambda req: 1)
            label_ids = [prepared[i][1].answers.first for i in good]
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

"""``promptreg inspect``: a version's virtual tokens against the base model's vocabulary.

What can be inspected depends on where a method's prompt lives (its ``SoftPrompt.kind``):

- ``input`` (prompt tuning, P-tuning): the N prompt rows fed as input embeddings (P-tuning's encoder
  output, as exported) are compared with the input embedding matrix;
- ``layer`` (ID-SPAM): the prompt is generated from each input; with ``text`` the N vectors generated
  for that text are inspected (inserted as hidden states before layer k: at k > 0 the vocabulary is only
  a proxy, said in ``space``); without ``text`` it is refused with one line;
- ``prefix`` (prefix tuning): per-layer key/values, nothing lives in the embedding space: refused with
  one line, before anything is loaded.

Every inspection is recorded as an ``inspect`` audit event whose details are the summary
(``PromptInspection.summary``); the version's MLflow description renders the latest one (refreshed
here, best effort: a warning if MLflow is unreachable, ``sync`` repairs it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from promptreg.errors import InputError
from promptreg.registry import queries as q
from promptreg.softprompt.inspection import PromptInspection, inspect_vectors

if TYPE_CHECKING:
    from promptreg.services.registry import Registry


def _refuse(method: str, kind: str, text: str | None) -> None:
    if kind == "prefix":
        raise InputError(f"{method} has nothing to inspect against the vocabulary: its virtual tokens are "
                         f"per-layer key/values, not input embeddings, so no vocabulary token corresponds to them")
    if kind == "layer" and not text:
        raise InputError(f"{method} generates its prompt from each input: pass --text TEXT to inspect the prompt "
                         f"it generates for that text")
    if kind not in ("input", "layer"):
        raise InputError(f"{method}: nothing to inspect (prompt kind {kind!r})")


def _vectors(loaded, kind: str, text: str | None):
    """The [N, H] vectors to inspect and, in words, what they are."""
    import torch

    soft = loaded.soft_model.soft_prompt
    with torch.no_grad():
        if kind == "input":
            return soft.prompt(), "input embeddings (the prompt rows fed in place of the virtual slots)"
        ids, _ = loaded.encoder.prompt(text)
        device = loaded.soft_model.base_model.get_input_embeddings().weight.device
        ids_t = torch.tensor([ids], device=device)
        embeds = loaded.soft_model.base_model.get_input_embeddings()(ids_t)
        prompt = soft.prompt(embeds, torch.ones_like(ids_t))[0]
    layer = soft.layer
    where = ("input embeddings" if layer == 0 else
             f"hidden states before layer {layer} (compared with the input embeddings: a proxy only)")
    return prompt, f"the prompt generated for --text, inserted as {where}"


def inspect_version(registry: Registry, ref: str, *, model: str | Path | None = None, top_k: int = 5,
                    text: str | None = None, device: str = "auto", record: bool = True) -> PromptInspection:
    from promptreg.services.evaluate import Evaluator
    from promptreg.softprompt.methods import METHODS

    info = registry.show(ref)
    cls = METHODS.get(info.method)
    if cls is None:
        raise InputError(f"{info.name}:{info.version}: unknown method {info.method!r}")
    _refuse(info.method, cls.kind, text)
    if top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {top_k}")
    warnings = []
    if text and cls.kind == "input":
        warnings.append(f"--text ignored: {info.method}'s prompt does not depend on the input")
        text = None
    ev = Evaluator(registry, model=model, device=device, log_mlflow=False)
    loaded = ev.load(info)
    vectors, space = _vectors(loaded, cls.kind, text)
    stats = inspect_vectors(vectors, loaded.base.model.get_input_embeddings().weight, top_k)
    tok = loaded.base.tokenizer
    tokens = [{"index": v.index, "norm": v.norm, "norm_percentile": v.norm_percentile,
               "nearest": [{"id": t, "token": tok.decode([t]), "cosine": c} for t, c in v.nearest]}
              for v in stats.vectors]
    report = PromptInspection(info.name, info.version, info.sha256, info.method, space, text, top_k,
                              loaded.base.fingerprint, tokens, stats.pairwise, stats.pairwise_mean, stats.vocab_norm,
                              warnings=[*ev.warnings, *warnings])
    if record:
        _record(registry, report)
    return report


def _record(registry: Registry, report: PromptInspection) -> None:
    from promptreg.services.describe import refresh_descriptions

    with registry.session() as s:
        v = q.version_of(s, report.prompt, report.version)
        q.add_event(s, actor=registry.settings.user, action="inspect", prompt_id=v.prompt_id,
                    to_version=report.version, details=report.summary())
    report.warnings += refresh_descriptions(registry, report.prompt, {report.version}, model=False)


__all__ = ["inspect_version"]

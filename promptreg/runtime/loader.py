"""Load a base model once and apply registered soft-prompt versions to it.

``load_base_model(path)`` reads a transformers folder (or ``smollm2``: the bundled SmolLM2 converted
once into the cache) and fingerprints it. ``load_soft_prompt(folder, manifest, base)`` builds a
version's method from its ``soft_prompt.safetensors`` (safetensors only, never pickle) and REFUSES
when the version was trained on a base model with another fingerprint: a soft prompt is only
meaningful for the exact weights and tokenizer it was trained against.

A :class:`LoadedPrompt` classifies (probabilities over the version's verbalizer labels) and generates
(greedy) with the version's own template, batching rows of similar length; under a launcher
(``torchrun``) whose other ranks serve scoring (:mod:`promptreg.runtime.parallel`), each rank scores
its share of the rows and the results come back in input order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptreg.errors import InputError, IntegrityError


def resolve_model_path(model: str | Path) -> Path:
    """A base-model folder from a path or the name ``smollm2`` (converted once, then cached)."""
    if str(model) in ("smollm2", "smollm2-135m-instruct"):
        from promptreg.data.model_fetch import fetch_smollm2

        return fetch_smollm2()
    path = Path(model)
    if not path.is_dir():
        raise InputError(f"base model folder not found: {model} (or use 'smollm2')")
    return path


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    return device


@dataclass
class LoadedBaseModel:
    """A frozen causal LM, its tokenizer and its fingerprint (``info``: fingerprints.model.ModelInfo)."""

    folder: Path
    info: Any
    model: Any
    tokenizer: Any
    device: str

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint


def load_base_model(model: str | Path, *, device: str = "auto") -> LoadedBaseModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from promptreg.fingerprints.model import model_fingerprint

    hf_logging.disable_progress_bar()  # no "Loading weights" bars on stderr: errors stay one line
    folder = resolve_model_path(model)
    info = model_fingerprint(folder)
    device = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval().to(device)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load base model {folder}: {first}") from None
    base.requires_grad_(False)
    return LoadedBaseModel(folder, info, base, tokenizer, device)


@dataclass
class LoadedPrompt:
    """One version applied to a loaded base model."""

    label: str                        # "name:version" (for messages)
    sha256: str
    manifest: dict
    base: LoadedBaseModel
    soft_model: Any                   # softprompt.soft_model.SoftPromptModel
    encoder: Any                      # softprompt.collate.Encoder
    task: str
    labels: list[str] = field(default_factory=list)
    answers: Any = None               # softprompt.collate.Answers (classification)

    folder: Path | None = None        # the verified artifact folder (data-parallel scoring ships its tensors)

    def classify(self, texts: list[str], *, batch_size: int = 32):
        """Probabilities [n, K] (numpy float32) over ``self.labels``, in input order. Under a launcher
        whose ranks serve scoring (runtime.parallel), every rank scores its share of ``texts``."""
        from promptreg.runtime import parallel

        if self.task != "classification":
            raise InputError(f"{self.label} is a {self.task} prompt: it has no labels to classify with")
        group = parallel.active()
        if group is not None:
            return group.classify(self, texts, batch_size=batch_size)
        return self.label_probs(texts, batch_size=batch_size).numpy()

    def label_probs(self, texts: list[str], *, batch_size: int = 32):
        """This process's probabilities [n, K] (a float32 tensor) for ``texts``."""
        import torch

        from promptreg.softprompt.scoring import classify

        if not texts:
            return torch.zeros((0, len(self.labels)), dtype=torch.float32)
        rows = [self.encoder.classification(t, 0) for t in texts]
        return classify(self.base.model, self.soft_model, rows, self.answers, batch_size=batch_size,
                        pad_id=self.encoder.pad_id).float().cpu()

    def generate(self, texts: list[str], *, max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
        """Greedy continuations (decoded, special tokens skipped), in input order (data-parallel as
        :meth:`classify`)."""
        from promptreg.runtime import parallel

        group = parallel.active()
        ids = (group.generate(self, texts, max_new_tokens=max_new_tokens, batch_size=batch_size) if group is not None
               else self.generated_ids(texts, max_new_tokens=max_new_tokens, batch_size=batch_size))
        return [self.base.tokenizer.decode(row, skip_special_tokens=True) for row in ids]

    def generated_ids(self, texts: list[str], *, max_new_tokens: int = 64, batch_size: int = 16) -> list[list[int]]:
        """This process's greedy continuations as token ids, in input order."""
        import torch

        from promptreg.softprompt.collate import Encoded, collate, length_batches

        rows = [Encoded(*self.encoder.prompt(t)) for t in texts]
        out: list[list[int]] = [[] for _ in rows]
        eos = self.base.tokenizer.eos_token_id
        with torch.no_grad():
            for idx in length_batches([len(r.ids) for r in rows], batch_size, shuffle=False):
                batch = collate([rows[i] for i in idx], self.encoder.pad_id, self.base.device)
                new = self.soft_model.generate(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"],
                                               max_new_tokens=max_new_tokens, eos_token_id=eos)
                for i, row in zip(idx, new, strict=True):
                    out[i] = [int(t) for t in row]
        return out


def check_compatible(manifest: dict, base: LoadedBaseModel, label: str) -> None:
    """Refuse a version trained on another base model (fingerprint over weights, config, tokenizer)."""
    want = (manifest.get("base_model") or {}).get("fingerprint")
    if want != base.fingerprint:
        raise IntegrityError(
            f"{label} was trained on base model {str(want)[:12]}, but the loaded model {base.folder} has "
            f"fingerprint {base.fingerprint[:12]}: refusing to apply it (use the base model it was trained on)")


def soft_prompt_from_folder(folder: Path, manifest: dict, dims, *, label: str):
    """The version's method rebuilt for inference from ``folder``'s ``soft_prompt.safetensors`` (safetensors
    only) for a base model of ``dims`` (softprompt.methods.ModelDims)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from promptreg.artifact.manifest import TENSORS_FILE
    from promptreg.softprompt.methods import method_from_tensors

    try:
        tensors = load_file(str(Path(folder) / TENSORS_FILE))
    except (SafetensorError, OSError) as exc:
        raise IntegrityError(f"{label}: cannot read {TENSORS_FILE}: {exc}") from None
    config = {**(manifest.get("method_config") or {}), "num_virtual_tokens": manifest["num_virtual_tokens"]}
    return method_from_tensors(manifest["method"], config, tensors, dims, trainable=False)


def task_parts(manifest: dict, tokenizer, slots: int, *, label: str, max_text_tokens: int = 256):
    """The version's prompt encoder (its template, ``slots`` virtual slots), task type, verbalizer labels
    and their answers (softprompt.collate.Answers: whole answers' tokens and the manifest's
    ``task.label_score``, so serving scores a label as training did; empty for generation)."""
    from promptreg.softprompt.collate import Answers, Encoder, answer_tokens

    task = manifest.get("task") or {}
    task_type = task.get("type") or "classification"
    template = task.get("template") or "{text}"
    encoder = Encoder(tokenizer, template, slots=slots, max_text_tokens=max_text_tokens)
    labels: list[str] = []
    ids = Answers(())
    if task_type == "classification":
        verbalizer = task.get("verbalizer") or {}
        if not verbalizer:
            raise InputError(f"{label} is a classification prompt without a verbalizer in its manifest")
        labels = list(verbalizer)
        ids = answer_tokens(tokenizer, [verbalizer[lab][0] for lab in labels], task.get("label_score") or "sum")
    return encoder, task_type, labels, ids


def load_soft_prompt(folder: Path, manifest: dict, base: LoadedBaseModel, *, label: str, sha256: str,
                     max_text_tokens: int = 256, check_base: bool = True) -> LoadedPrompt:
    """Build ``folder``'s soft prompt on ``base`` (``folder`` must already be sha256-verified).

    ``check_base=False`` is only for drift re-evaluation, which deliberately tries a version on a NEW
    base model (same dimensions required) to decide whether it may stay."""
    from promptreg.softprompt.methods import ModelDims
    from promptreg.softprompt.soft_model import SoftPromptModel

    if check_base:
        check_compatible(manifest, base, label)
    soft = soft_prompt_from_folder(folder, manifest, ModelDims.from_config(base.model.config), label=label)
    soft_model = SoftPromptModel(base.model, soft)
    soft_model.eval()
    encoder, task_type, labels, ids = task_parts(manifest, base.tokenizer, soft.input_slots, label=label,
                                                 max_text_tokens=max_text_tokens)
    return LoadedPrompt(label, sha256, manifest, base, soft_model, encoder, task_type, labels, ids, Path(folder))

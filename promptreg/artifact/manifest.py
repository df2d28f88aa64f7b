"""``promptreg.json``: the manifest of a soft-prompt artifact (format version 1).

A version is a folder holding:
- ``soft_prompt.safetensors``: promptreg's native tensors. ``prompt_embeddings`` is the effective
  virtual-token tensor the model consumes ([N, hidden] for prompt/P-tuning, [N, layers*2*kv_dim]
  for prefix tuning); methods with a generator or encoder add their weights under a prefix
  (``encoder.*``, ``generator.*``) so training can resume and input-dependent prompts can run.
- ``promptreg.json``: this manifest.
- ``adapter_config.json`` + ``adapter_model.safetensors``: the PEFT export (prompt tuning, prefix
  tuning, P-tuning), loadable with ``PeftModel.from_pretrained(base, folder)``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FORMAT_VERSION = 1
MANIFEST_FILE = "promptreg.json"
TENSORS_FILE = "soft_prompt.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"

Method = Literal["prompt_tuning", "prefix_tuning", "p_tuning", "id_spam", "iapt"]
PEFT_METHODS = {"prompt_tuning": "PROMPT_TUNING", "prefix_tuning": "PREFIX_TUNING", "p_tuning": "P_TUNING"}
DTYPES = ("F32", "F16", "BF16", "F64")

_HEX64 = re.compile(r"[0-9a-f]{64}")


def _hex64(value: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ValueError("must be a sha256 hex digest (64 lowercase hex characters)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaseModelRef(_Strict):
    fingerprint: str
    name_or_path: str | None = None
    model_type: str | None = None
    architecture: str | None = None
    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int | None = Field(default=None, gt=0)
    head_dim: int | None = Field(default=None, gt=0)
    vocab_size: int | None = Field(default=None, gt=0)

    _check_fp = field_validator("fingerprint")(classmethod(lambda cls, v: _hex64(v)))

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def effective_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


class DatasetRef(_Strict):
    fingerprint: str
    name: str | None = None
    source: str | None = None
    rows: int | None = Field(default=None, ge=0)

    _check_fp = field_validator("fingerprint")(classmethod(lambda cls, v: _hex64(v)))


class TaskSpec(_Strict):
    type: Literal["classification", "generation"] = "classification"
    verbalizer: dict[str, list[str]] | None = None
    template: str | None = None
    # how a label with a multi-token answer is scored: its tokens' summed (default) or mean log-probability
    label_score: Literal["sum", "mean"] | None = None


class TensorSpec(_Strict):
    shape: list[int]
    dtype: Literal["F32", "F16", "BF16", "F64"]


class Manifest(_Strict):
    format_version: Literal[1] = FORMAT_VERSION
    kind: Literal["promptreg.soft_prompt"] = "promptreg.soft_prompt"
    method: Method
    num_virtual_tokens: int = Field(gt=0, le=4096)
    task: TaskSpec = Field(default_factory=TaskSpec)
    method_config: dict[str, Any] = Field(default_factory=dict)
    tensors: dict[str, TensorSpec]
    base_model: BaseModelRef
    dataset: DatasetRef | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    created_by: str = ""
    created_at: str
    promptreg_version: str
    reproducibility: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metrics")
    @classmethod
    def _finite_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        for key, value in v.items():
            if not math.isfinite(value):
                raise ValueError(f"metric {key!r} is not finite")
        return v

    @field_validator("tensors")
    @classmethod
    def _nonempty(cls, v: dict[str, TensorSpec]) -> dict[str, TensorSpec]:
        if not v:
            raise ValueError("at least one tensor is required")
        return v

    def expected_prompt_shape(self) -> list[int] | None:
        """Shape of ``prompt_embeddings`` this method must have for the base model (None: no rule)."""
        bm, n = self.base_model, self.num_virtual_tokens
        if self.method in ("prompt_tuning", "p_tuning"):
            return [n, bm.hidden_size]
        if self.method == "prefix_tuning":
            return [n, bm.num_hidden_layers * 2 * bm.kv_heads * bm.effective_head_dim]
        return None


def format_validation_error(exc: Exception) -> str:
    """One line out of a pydantic ValidationError."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for err in errors()[:3]:
            loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
            parts.append(f"{loc}: {err.get('msg')}")
        more = len(errors()) - 3
        return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
    return str(exc)

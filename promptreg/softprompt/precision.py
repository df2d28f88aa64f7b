"""Numeric precision of a training or scoring job: ``fp32``, ``bf16`` or ``fp16``.

Invariants (what every precision guarantees):
- the frozen base model is LOADED in ``Precision.dtype`` (``from_pretrained(dtype=...)``: no fp32
  copy first) and runs under ``torch.autocast(dtype)`` for bf16/fp16;
- the trainable soft-prompt parameters and the AdamW moments are always float32 (master weights):
  the prompt is cast to the model dtype where it enters the model (autograd casts its gradient
  back to float32), so small updates are never rounded away;
- the logits that feed a softmax / cross-entropy never come out of an autocast matmul: the label
  logits are computed in float32 outside autocast (``full_precision``), the generation logits in the
  head's storage dtype and upcast (see runtime.soft_model). CUDA/CPU autocast lowers ``@``/``linear``
  to bf16 even when both operands were upcast with ``.float()``: label logits of magnitude 20-30 then
  have a resolution of 0.125, the two labels' logits tie and ``argmax`` answers the first label for
  every row. That was the "bf16 diverges to 0.42 accuracy" symptom (0.42 = the first label's share);
- fp16 scales the loss with ``torch.amp.GradScaler`` (steps with inf/nan gradients are skipped and the
  scale lowered); fp32/bf16 refuse a non-finite loss or gradient with a one-line error.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from promptreg.errors import InputError

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    name: str = "fp32"

    def __post_init__(self) -> None:
        if self.name not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.name!r}")

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    @property
    def mixed(self) -> bool:
        return self.name != "fp32"

    def autocast(self, device_type: str):
        """Autocast around the frozen model (a no-op context for fp32)."""
        import torch

        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)

    def scaler(self, device_type: str):
        """A GradScaler for fp16, None otherwise (bf16 has fp32's exponent range)."""
        import torch

        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(device_type)


def full_precision(device_type: str):
    """A region where autocast is off: matmuls run in their operands' dtype."""
    import torch

    return torch.autocast(device_type, enabled=False)


def check_finite_grads(params, step: int, precision: Precision) -> None:
    """Refuse non-finite gradients (fp32/bf16; fp16's GradScaler skips such steps itself)."""
    import torch

    for p in params:
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            hint = " or use --precision fp32" if precision.mixed else ""
            raise InputError(f"training diverged: non-finite gradient at step {step} (lower --lr{hint})")

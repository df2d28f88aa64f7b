"""Run by ``torchrun --nproc-per-node N tests/ddp_worker.py MODEL OUT [METHOD [fsdp]]`` from
tests/test_training_scale.py: trains the toy job with the Trainer under the launcher's gloo group
and, on rank 0, writes the final soft prompt (safetensors) and the loss history (JSON) to OUT."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.softprompt import distributed as dist
    from promptreg.training.trainer import Trainer
    from tests.test_training_scale import ddp_job

    model, out = sys.argv[1], Path(sys.argv[2])
    method = sys.argv[3] if len(sys.argv) > 3 else "prompt_tuning"
    ctx, device = dist.init_from_env("cpu")
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model)
    cfg, spec, train, evals = ddp_job(method)
    cfg.fsdp = len(sys.argv) > 4 and sys.argv[4] == "fsdp"
    result = Trainer(base, tok, cfg, spec, train, evals, progress=False, dist_ctx=ctx).run()
    weight = base.model.layers[0].self_attn.q_proj.weight
    local_rows = weight.to_local().shape[0] if hasattr(weight, "to_local") else weight.shape[0]
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_file(result.soft_prompt.export_tensors(), str(out / "prompt.safetensors"))
        (out / "history.json").write_text(json.dumps({"loss": result.history["loss"], "eval": result.history["eval"],
                                                      "world": ctx.world, "q_proj_local_rows": local_rows,
                                                      "q_proj_rows": int(weight.shape[0])}))
    dist.shutdown(ctx)


if __name__ == "__main__":
    main()

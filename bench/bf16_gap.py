"""Where the SmolLM2 bf16-vs-fp32 accuracy gap of issue 17 comes from (the heavy test's job: prompt
tuning, 8 tokens, lr 0.1, 16 steps of 8, 200 eval rows).

Each prompt is trained under one numerics and then SCORED under each, on the same eval rows:

    training: fp32      weights fp32, no autocast                  (--precision fp32)
              bf16      weights loaded in bf16 + bf16 autocast     (--precision bf16)
              autocast  weights fp32 + bf16 autocast               (mixed precision with fp32 weights)
    scoring:  fp32, bf16 (as above)

Reading the table: if the bf16-trained prompt scores like the fp32-trained one under fp32 scoring, the
gap is in bf16 *scoring*; if it scores low under both, the *training trajectory* differs (then the
per-step losses and the distance between the final prompts say how far apart the runs went). Scoring
is a Trainer run with lr 1e-12 for one step, warm-started from the prompt (the same evaluation code
as training's).

Run: .venv/bin/python bench/bf16_gap.py [--model smollm2] [--steps 16] [--seeds 0]
Prints ONE JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_training import TEMPLATE, _spec, toy_examples  # noqa: E402

TRAININGS = {"fp32": ("fp32", "fp32"), "bf16": ("bf16", "bf16"), "autocast": ("fp32", "bf16")}  # weights, autocast


def _base(model_dir, weights: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.softprompt.precision import Precision

    return (AutoModelForCausalLM.from_pretrained(model_dir, dtype=Precision(weights).dtype).eval(),
            AutoTokenizer.from_pretrained(model_dir))


def _config(precision: str, steps: int, lr: float, seed: int, warmup: float = 0.0):
    from promptreg.training.trainer import TrainConfig

    return TrainConfig(method="prompt_tuning", method_options={"num_virtual_tokens": 8, "init": "labels"},
                       template=TEMPLATE, max_steps=steps, batch_size=8, lr=lr, warmup_ratio=warmup, eval_every=steps,
                       patience=100, precision=precision, seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--warmup", type=float, default=0.0, help="warm-up ratio of the training runs")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--trainings", default=",".join(TRAININGS), help="which of fp32,bf16,autocast to train")
    args = ap.parse_args()

    import torch

    from promptreg.runtime.loader import resolve_model_path
    from promptreg.training.trainer import Trainer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = resolve_model_path(args.model)
    train, evals = toy_examples(128, 21), toy_examples(200, 22)
    bases = {w: _base(model, w) for w in ("fp32", "bf16")}
    out: dict = {"bench": "bf16_gap", "model": args.model, "steps": args.steps, "lr": args.lr,
                 "warmup": args.warmup, "runs": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        prompts, losses, row = {}, {}, {"seed": seed, "trained_eval_accuracy": {}, "scored": {}}
        for name in args.trainings.split(","):
            weights, precision = TRAININGS[name]
            t0 = time.monotonic()
            base, tok = bases[weights]
            result = Trainer(base, tok, _config(precision, args.steps, args.lr, seed, args.warmup), _spec(), train, evals,
                             progress=False).run()
            soft = result.soft_prompt
            prompts[name] = (soft.method_config(), {k: v.detach().float().clone() for k, v in soft.export_tensors().items()})
            losses[name] = [round(x, 4) for x in result.history["loss"]]
            row["trained_eval_accuracy"][name] = result.history["eval"][-1]["accuracy"]
            print(f"[bf16_gap] seed {seed} trained {name}: acc {row['trained_eval_accuracy'][name]:.3f} "
                  f"({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
        for name, warm in prompts.items():
            for scoring in ("fp32", "bf16"):
                base, tok = bases[scoring]
                result = Trainer(base, tok, _config(scoring, 1, 1e-12, seed), _spec(), train[:8], evals,
                                 progress=False, warm_start=warm).run()
                row["scored"][f"{name}->{scoring}"] = result.history["eval"][-1]["accuracy"]
        first = next(iter(prompts))
        ref = torch.cat([t.flatten() for t in prompts[first][1].values()])
        row[f"distance_from_{first}_prompt"] = {
            name: {"relative_l2": float((torch.cat([t.flatten() for t in p[1].values()]) - ref).norm() / ref.norm()),
                   "cosine": float(torch.nn.functional.cosine_similarity(
                       torch.cat([t.flatten() for t in p[1].values()]), ref, dim=0))}
            for name, p in prompts.items() if name != first}
        row["step_losses"] = losses
        out["runs"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

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

``--data DIR`` trains the demo's job instead of the toy one: a ``promptreg datasets fetch rotten-tomatoes``
folder (train.jsonl; the first ``--eval-rows`` of test.jsonl are scored), the demo's template, batch 16
(``--batch-size``) and ``--steps 200``. ``--device cuda`` runs it on a GPU (scripts/gpu_checks.sh).

Run: .venv/bin/python bench/bf16_gap.py [--model smollm2] [--steps 16] [--seeds 0] [--device cpu]
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
from tests.test_training_scale import _base, exported, precision_job, score_prompt  # noqa: E402

DEMO_TEMPLATE = "{virtual}Review: {text}\nSentiment:"   # scripts/demo.py's

TRAININGS = {"fp32": ("fp32", "fp32"), "bf16": ("bf16", "bf16"), "autocast": ("fp32", "bf16")}  # weights, autocast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--warmup", type=float, default=0.0, help="warm-up ratio of the training runs")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--trainings", default=",".join(TRAININGS), help="which of fp32,bf16,autocast to train")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", type=Path, default=None, help="a rotten-tomatoes folder: the demo's job")
    ap.add_argument("--batch-size", type=int, default=None, help="default 8 (toy), 16 (--data)")
    ap.add_argument("--eval-rows", type=int, default=400, help="with --data: rows of test.jsonl scored")
    args = ap.parse_args()

    import torch

    from promptreg.data.examples import load_examples
    from promptreg.runtime.loader import resolve_model_path
    from promptreg.training.trainer import Trainer

    model = resolve_model_path(args.model)
    if args.data:
        train = load_examples(args.data / "train.jsonl", _spec())
        evals = load_examples(args.data / "test.jsonl", _spec())[: args.eval_rows]
        template, batch_size = DEMO_TEMPLATE, args.batch_size or 16
    else:
        train, evals = toy_examples(128, 21), toy_examples(200, 22)
        template, batch_size = TEMPLATE, args.batch_size or 8
    bases = {}
    for weights in ("fp32", "bf16"):
        base, tok = _base(model, weights)
        bases[weights] = (base.to(args.device), tok)
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    out: dict = {"bench": "bf16_gap", "model": args.model, "device": device_name,
                 "job": "demo (rotten-tomatoes)" if args.data else "toy", "steps": args.steps, "lr": args.lr,
                 "batch_size": batch_size, "warmup": args.warmup, "eval_rows": len(evals), "runs": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        prompts, losses, row = {}, {}, {"seed": seed, "trained_eval_accuracy": {}, "scored": {}}
        for name in args.trainings.split(","):
            weights, precision = TRAININGS[name]
            t0 = time.monotonic()
            base, tok = bases[weights]
            cfg = precision_job(precision, seed, steps=args.steps, lr=args.lr, warmup=args.warmup,
                                batch_size=batch_size, template=template)
            result = Trainer(base, tok, cfg, _spec(), train, evals, progress=False).run()
            prompts[name] = exported(result.soft_prompt)
            losses[name] = [round(x, 4) for x in result.history["loss"]]
            row["trained_eval_accuracy"][name] = result.history["eval"][-1]["accuracy"]
            seconds = row.setdefault("train_seconds", {})[name] = round(time.monotonic() - t0, 1)
            print(f"[bf16_gap] seed {seed} trained {name}: acc {row['trained_eval_accuracy'][name]:.3f} "
                  f"({seconds:.0f} s)", file=sys.stderr, flush=True)
        for name, prompt in prompts.items():
            for scoring in ("fp32", "bf16"):
                row["scored"][f"{name}->{scoring}"] = score_prompt(*bases[scoring], prompt, scoring, seed, train, evals,
                                                                   template)
        flat = {name: torch.cat([t.flatten() for t in p[1].values()]) for name, p in prompts.items()}
        first = next(iter(flat))
        ref = flat[first]
        row[f"distance_from_{first}_prompt"] = {
            name: {"relative_l2": float((v - ref).norm() / ref.norm()),
                   "cosine": float(torch.nn.functional.cosine_similarity(v, ref, dim=0))}
            for name, v in flat.items() if name != first}
        row["step_losses"] = losses
        out["runs"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

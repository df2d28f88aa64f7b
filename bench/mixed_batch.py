"""Inference with many soft prompts on one base model: PEFT adapter switching vs promptreg's mixed batch.

Setting (issue 6): V prompt-tuning versions (default 16, N = 20 virtual tokens, random or vocabulary
init, alternating) of one base model (SmolLM2-135M-Instruct by default, or --model FOLDER), written as
PEFT-loadable artifacts and registered in a temporary embedded registry; P requests per version
(default 4, so 64 requests) with real Rotten Tomatoes review snippets. Two tasks: classification (one
forward, the label-token logits at the last position) and greedy generation of --new-tokens tokens.

Measured (each --repeats times after one warm-up, medians reported; throughput = requests / second):

- (a) PEFT, the way its docs switch adapters: ``PeftModel.from_pretrained(base, folder_1,
  adapter_name="v1")``, ``load_adapter`` for the others, then for each adapter ``set_adapter`` and its P
  requests as one batch. ``a_switch``: adapters already loaded (switching only); ``a_load``: building
  the PeftModel and loading every adapter is inside the timing too.
- (b) promptreg: ``PromptRuntime.classify`` / ``generate`` on all V x P requests, ONE mixed batch
  (alias resolution + version cache hits included).
- (c) the same runtime on one batch of V x P requests that all name a single version.

Ratios: b/a (switching only and with loading) and b/c. Issue targets: b >= 8 x a and b >= 0.9 x c.

Agreement check (not timed): for --check requests, the label logits of (b)'s mixed batch vs PEFT
running that request alone (batch of one, no padding: PEFT's prompt goes before the padding, PEFT
#1093, so padded PEFT rows are not a reference), max abs difference, and whether greedy generations
are identical.

Run: ``.venv/bin/python bench/mixed_batch.py [--versions 16 --per-version 4] [--device cuda]``; prints
one JSON object on stdout (progress on stderr). Not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEMPLATE = "{virtual}Review: {text}\nSentiment:"
VERBALIZER = {"negative": [" negative"], "positive": [" positive"]}


def log(msg: str) -> None:
    print(f"[mixed_batch] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="base model folder or 'smollm2' (default)")
    ap.add_argument("--versions", type=int, default=16)
    ap.add_argument("--per-version", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=20, help="virtual tokens per version")
    ap.add_argument("--new-tokens", type=int, default=16, help="greedy tokens generated per request")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    ap.add_argument("--check", type=int, default=4, help="requests compared with PEFT alone")
    ap.add_argument("--tasks", default="classify,generate", help="comma-separated: classify, generate")
    args = ap.parse_args()

    import torch

    from promptreg.runtime.loader import pick_device, resolve_model_path

    device = pick_device(args.device)
    if device == "cpu":
        torch.set_num_threads(args.threads)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    model_dir = resolve_model_path(args.model)
    with tempfile.TemporaryDirectory(prefix="promptreg-bench-") as tmp:
        out = run(args, Path(tmp), model_dir, device, tasks)
    print(json.dumps(out, indent=2))


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: dict, repeats: int, device: str, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each ``fns[name]()`` over ``repeats`` rounds; each round runs every variant once, in a
    rotated order, so a slow spell on a shared machine hits all variants alike (medians reported)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            sync(device)
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def run(args, tmp: Path, model_dir: Path, device: str, tasks: list[str]) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptreg import Registry
    from promptreg.artifact.builder import write_artifact
    from promptreg.data.dataset_fetch import load_reviews
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.runtime.service import PromptRuntime
    from promptreg.softprompt.collate import Encoder, label_token_ids
    from promptreg.softprompt.methods import ModelDims, build_method

    v_count, per = args.versions, args.per_version
    total = v_count * per
    log(f"base model {model_dir} on {device}; {v_count} versions x {per} requests")
    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval().to(device)
    base.requires_grad_(False)
    info = model_fingerprint(model_dir).to_dict()
    dims = ModelDims.from_config(base.config)

    # ---- versions: built, written as PEFT-loadable artifacts, registered ----------------------------------
    reg = Registry(home=str(tmp / ".promptreg"), tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    t0 = time.perf_counter()
    for v in range(1, v_count + 1):
        init = "random" if v % 2 else "vocab"
        sp = build_method("prompt_tuning", {"num_virtual_tokens": args.tokens, "init": init}, dims,
                          embedding_weight=base.get_input_embeddings().weight.detach().cpu(), tokenizer=tok, seed=v)
        folder = write_artifact(tmp / f"art{v}", method="prompt_tuning", tensors=sp.export_tensors(),
                                base_model=info, num_virtual_tokens=sp.num_virtual_tokens,
                                task={"type": "classification", "template": TEMPLATE, "verbalizer": VERBALIZER},
                                method_config=sp.method_config(), created_by="bench")
        reg.push(folder, "bench")
    log(f"registered {v_count} versions in {time.perf_counter() - t0:.1f} s")
    folders = [reg.fetch_verified(f"bench:{v}")[1] for v in range(1, v_count + 1)]

    reviews, _ = load_reviews()
    texts = [r["text"] for r in random.Random(0).sample(reviews, total)]
    refs = [f"bench:{v}" for v in range(1, v_count + 1) for _ in range(per)]
    mixed = [{"ref": r, "text": t} for r, t in zip(refs, texts, strict=True)]
    single = [{"ref": "bench:1", "text": t} for t in texts]
    gen_mixed = [{**r, "max_new_tokens": args.new_tokens} for r in mixed]
    gen_single = [{**r, "max_new_tokens": args.new_tokens} for r in single]

    # ---- the three systems --------------------------------------------------------------------------------
    from peft import PeftModel

    runtime = PromptRuntime(reg, model_dir, device=device, max_versions=max(64, v_count))
    runtime.base()
    plain = Encoder(tok, TEMPLATE, slots=0)  # PEFT puts its virtual tokens before the input ids
    label_ids = label_token_ids(tok, [VERBALIZER[k][0] for k in VERBALIZER])
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def batch_of(idx: list[int]):
        rows = [plain.prompt(texts[i])[0] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, width - len(r):] = torch.tensor(r)
            mask[j, width - len(r):] = 1
        return ids.to(device), mask.to(device)

    groups = [list(range(v * per, (v + 1) * per)) for v in range(v_count)]
    batches = [batch_of(g) for g in groups]

    def peft_load():
        model = PeftModel.from_pretrained(base, str(folders[0]), adapter_name="v1")
        for v in range(2, v_count + 1):
            model.load_adapter(str(folders[v - 1]), adapter_name=f"v{v}")
        model.eval()
        return model

    def peft_classify(model, ids, mask):
        out = model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
        return out.logits[:, -1, label_ids].float()

    def peft_generate(model, ids, mask):
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens, do_sample=False,
                              pad_token_id=pad, eos_token_id=tok.eos_token_id)

    def peft_all(model, task):
        step = peft_classify if task == "classify" else peft_generate
        outs = []
        with torch.no_grad():
            for v, (ids, mask) in enumerate(batches, start=1):
                model.set_adapter(f"v{v}")
                outs.append(step(model, ids, mask))
        return outs

    peft_model = peft_load()
    results: dict = {}
    for task in tasks:
        fn = runtime.classify if task == "classify" else runtime.generate
        b_reqs, c_reqs = (mixed, single) if task == "classify" else (gen_mixed, gen_single)
        bad = [r for r in fn(b_reqs) + fn(c_reqs) if "error" in r]
        if bad:
            raise SystemExit(f"runtime request failed: {bad[0]}")
        results[task] = interleaved({
            "a_switch": lambda task=task: peft_all(peft_model, task),
            "a_load": lambda task=task: peft_all(peft_load(), task),
            "b_mixed": lambda fn=fn, q=b_reqs: fn(q),
            "c_single": lambda fn=fn, q=c_reqs: fn(q),
        }, args.repeats, device)
        log(f"{task}: " + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in results[task].items()))
    load_s = statistics.median(interleaved({"load": peft_load}, args.repeats, device)["load"])

    # ---- agreement with PEFT alone -------------------------------------------------------------------------
    check_idx = [g[0] for g in groups][: args.check]
    agreement: dict = {}
    leading = plain.bos == []  # PEFT prepends its prompt before everything, BOS included
    if not leading:
        agreement["note"] = "the tokenizer adds a BOS token: PEFT puts its prompt before it, promptreg after it"
        check_idx = []
    if "classify" in tasks and check_idx:
        from promptreg.runtime.mixed import MixedRow

        entries = {}
        rows, lids = [], []
        for req in mixed:
            info_v = runtime.resolve(req["ref"])
            entry = runtime._entry(info_v, entries)
            rows.append(MixedRow(entry.soft_prompt, *entry.encoder.prompt(req["text"])))
            lids.append(entry.answers.first)
        ours = runtime._runner.label_logits(rows, lids)  # the one mixed batch (b) runs
        diffs, flips = [], 0
        with torch.no_grad():
            for i in check_idx:
                peft_model.set_adapter(f"v{i // per + 1}")
                ids, mask = batch_of([i])
                theirs = peft_classify(peft_model, ids, mask)[0].cpu()
                mine = ours[i].cpu()
                order = [list(VERBALIZER).index(lab) for lab in runtime._cache[runtime.resolve(refs[i]).sha256].labels]
                theirs = theirs[order]
                diffs.append(float((mine - theirs).abs().max()))
                flips += int(mine.argmax() != theirs.argmax())
        agreement["classify"] = {"requests": len(check_idx), "max_abs_logit_diff": max(diffs),
                                 "prediction_mismatches": flips}
    if "generate" in tasks and check_idx:
        gen = runtime.generate([gen_mixed[i] for i in check_idx] + gen_mixed)[: len(check_idx)]
        same = 0
        with torch.no_grad():
            for i, res in zip(check_idx, gen, strict=True):
                peft_model.set_adapter(f"v{i // per + 1}")
                ids, mask = batch_of([i])
                new = peft_generate(peft_model, ids, mask)[0, ids.shape[1]:].tolist()
                new = [t for t in new if t != tok.eos_token_id]
                same += int(tok.decode(new, skip_special_tokens=True) == res["text"])
        agreement["generate"] = {"requests": len(check_idx), "identical_generations": same}

    # ---- report --------------------------------------------------------------------------------------------
    report = {
        "setting": {"base_model": str(model_dir), "device": device, "threads": torch.get_num_threads(),
                    "versions": v_count, "requests_per_version": per, "requests": total,
                    "virtual_tokens": args.tokens, "new_tokens": args.new_tokens, "repeats": args.repeats,
                    "torch": torch.__version__, "peft_adapter_loading_s": round(load_s, 4),
                    "mean_prompt_tokens": round(statistics.mean(len(plain.prompt(t)[0]) for t in texts), 1)},
        "targets": {"b_over_a": 8.0, "b_over_c": 0.9},
    }
    keys = ("a_switch", "a_load", "b_mixed", "c_single")
    for task in tasks:
        med = {k: statistics.median(results[task][k]) for k in keys}
        thr = {k: total / med[k] for k in keys}
        report[task] = {
            "median_s": {k: round(med[k], 4) for k in keys},
            "throughput_rps": {k: round(v, 2) for k, v in thr.items()},
            "ratios": {"b_over_a_switch": round(thr["b_mixed"] / thr["a_switch"], 3),
                       "b_over_a_load": round(thr["b_mixed"] / thr["a_load"], 3),
                       "b_over_c": round(thr["b_mixed"] / thr["c_single"], 3)},
            "best_s": {k: round(min(results[task][k]), 4) for k in keys},
            "ratios_of_best": {"b_over_a_switch": round(min(results[task]["a_switch"]) / min(results[task]["b_mixed"]), 3),
                               "b_over_c": round(min(results[task]["c_single"]) / min(results[task]["b_mixed"]), 3)},
            "runs_s": {k: [round(x, 4) for x in results[task][k]] for k in keys},
        }
    report["agreement_with_peft_alone"] = agreement
    report["runtime_stats"] = runtime.stats()
    return report


if __name__ == "__main__":
    main()

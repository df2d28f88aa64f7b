"""Serving engines for many soft prompts on one base model, under concurrent clients (issue 18).

Setting: V prompt-tuning versions (default 16, N = 20 virtual tokens) of one base model, registered in a
temporary embedded registry (PEFT-loadable artifacts); R requests (real Rotten Tomatoes snippets) spread
over the versions and shuffled, sent by C concurrent clients, each waiting for its answer before sending
its next request (closed loop). Two tasks: classification (label-token probabilities at the last
position) and greedy generation of --new-tokens tokens. Engines, all float32 by default (--dtype):

- (a) ``peft``: PEFT adapter switching behind a batcher -- what arrives within --max-wait-ms (up to
  --max-batch) is grouped by version, and each group runs as one batch after ``set_adapter`` (PEFT runs
  one prompt adapter per batch, huggingface/peft#759).
- (b) ``promptreg``: promptreg's own runtime behind the same batcher: ONE mixed batch per collection
  (PromptRuntime.classify / generate, as ``promptreg serve`` runs it).
- (c) ``vllm_embeds``: VllmRuntime on an in-process vLLM engine: each client calls the runtime itself
  (resolve, cached version, ``[template | soft prompt | text]`` embeddings) and vLLM schedules the rows of
  all clients in its continuous batches (``prompt_embeds``).
- (d) ``vllm_text``: the same engine on the same requests' text without any soft prompt (token ids of the
  template + text): the engine's own ceiling.

Reported per task and engine: requests/s (R / wall time of the whole run), p50 and p99 latency (send to
answer), and ratios c/d, c/a, b/a. Agreement (c) vs (b) on the timed answers: classification max |p diff|
and label mismatches, generation identical texts. Goals (issue 18, GPU): c >= 0.8 x d, c >= 8 x a.

Run: ``make bench-engines`` (CPU, in .venv-vllm) or ``.venv-vllm/bin/python bench/serve_engines.py
[--model smollm2|FOLDER|1b] [--requests 64 --clients 16 --new-tokens 64]``; ``--model 1b`` writes a
randomly initialised 1B-class Llama (SmolLM2's tokenizer) first. GPU: ``bash bench/serve_engines_gpu.sh``.
Prints one JSON object on stdout (progress on stderr). Not a test.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEMPLATE = "{virtual}Review: {text}\nSentiment:"
VERBALIZER = {"negative": [" negative"], "positive": [" positive"]}
ENGINES = ("peft", "promptreg", "vllm_embeds", "vllm_text")


def log(msg: str) -> None:
    print(f"[serve_engines] {msg}", file=sys.stderr, flush=True)


class Batcher:
    """One worker thread: takes the first waiting request, then whatever else arrives within ``max_wait_s``
    (up to ``max_batch``), runs ``handler(requests) -> results`` once, answers each caller."""

    def __init__(self, handler, max_batch: int, max_wait_s: float) -> None:
        self.handler, self.max_batch, self.max_wait_s = handler, max_batch, max_wait_s
        self.inbox: queue.Queue = queue.Queue()
        self.batches: list[int] = []
        threading.Thread(target=self._loop, daemon=True).start()

    def __call__(self, request):
        fut: Future = Future()
        self.inbox.put((request, fut))
        return fut.result()

    def _loop(self) -> None:
        while True:
            batch = [self.inbox.get()]
            deadline = time.perf_counter() + self.max_wait_s
            while len(batch) < self.max_batch:
                left = deadline - time.perf_counter()
                try:
                    batch.append(self.inbox.get(timeout=left) if left > 0 else self.inbox.get_nowait())
                except queue.Empty:
                    break
            self.batches.append(len(batch))
            try:
                results = self.handler([r for r, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the bench reports it
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            for (_, fut), res in zip(batch, results, strict=True):
                fut.set_result(res)


def drive(call, requests: list, clients: int) -> dict:
    """Closed loop: ``clients`` threads take the next request, call, record latency; all answers kept."""
    answers: list = [None] * len(requests)
    latency: list[float] = [0.0] * len(requests)
    nxt = iter(range(len(requests)))
    lock = threading.Lock()
    errors: list = []

    def client():
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                answers[i] = call(requests[i])
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))
                return
            latency[i] = time.perf_counter() - t0

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"a request failed: {errors[0]}")
    bad = [a for a in answers if isinstance(a, dict) and "error" in a]
    if bad:
        raise SystemExit(f"a request failed: {bad[0]}")
    lat = sorted(latency)
    return {"wall_s": wall, "rps": len(requests) / wall, "p50_s": statistics.median(lat),
            "p99_s": lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))], "answers": answers}


def build_1b(dest: Path, tokenizer_dir: Path) -> Path:
    """A randomly initialised 1B-class Llama (Llama-3.2-1B-like shape) with SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    log(f"wrote a random 1B-class Llama ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params) to {dest}")
    return dest


def register(tmp: Path, model_dir: Path, versions: int, tokens: int):
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from promptreg import Registry
    from promptreg.artifact.builder import write_artifact
    from promptreg.fingerprints.model import model_fingerprint
    from promptreg.runtime.prompt_embeds import embedding_matrix
    from promptreg.softprompt.methods import ModelDims, build_method

    tok = AutoTokenizer.from_pretrained(model_dir)
    dims = ModelDims.from_config(AutoConfig.from_pretrained(model_dir))
    weight = embedding_matrix(model_dir)
    info = model_fingerprint(model_dir).to_dict()
    reg = Registry(home=str(tmp / ".promptreg"), tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    for v in range(1, versions + 1):
        sp = build_method("prompt_tuning", {"num_virtual_tokens": tokens, "init": "random" if v % 2 else "vocab"},
                          dims, embedding_weight=weight, tokenizer=tok, seed=v)
        with torch.no_grad():  # move away from the init so versions answer differently
            sp.embedding.add_(torch.randn(sp.embedding.shape, generator=torch.Generator().manual_seed(v)) * 0.02)
        folder = write_artifact(tmp / f"art{v}", method="prompt_tuning", tensors=sp.export_tensors(), base_model=info,
                                num_virtual_tokens=sp.num_virtual_tokens,
                                task={"type": "classification", "template": TEMPLATE, "verbalizer": VERBALIZER},
                                method_config=sp.method_config(), created_by="bench")
        reg.push(folder, "bench")
    return reg, tok


def peft_engine(reg, model_dir: Path, tok, versions: int, device: str, task: str, new_tokens: int):
    """(a): handler over a PeftModel holding every version as a named adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from promptreg.softprompt.collate import Encoder, label_token_ids

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval().to(device)
    folders = {f"bench:{v}": str(reg.fetch_verified(f"bench:{v}")[1]) for v in range(1, versions + 1)}
    model = PeftModel.from_pretrained(base, folders["bench:1"], adapter_name="bench:1")
    for ref, folder in list(folders.items())[1:]:
        model.load_adapter(folder, adapter_name=ref)
    model.eval()
    plain = Encoder(tok, TEMPLATE, slots=0)  # PEFT puts its virtual tokens before the input ids
    labels = list(VERBALIZER)
    label_ids = label_token_ids(tok, [VERBALIZER[k][0] for k in labels])
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def handler(requests):
        out = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r["ref"], []).append(i)
        with torch.no_grad():
            for ref, idx in groups.items():
                model.set_adapter(ref)
                rows = [plain.prompt(requests[i]["text"])[0] for i in idx]
                width = max(map(len, rows))
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for j, row in enumerate(rows):
                    ids[j, width - len(row):] = torch.tensor(row)
                    mask[j, width - len(row):] = 1
                ids, mask = ids.to(device), mask.to(device)
                if task == "classify":
                    probs = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1, label_ids]
                    for i, p in zip(idx, probs.float().softmax(-1).tolist(), strict=True):
                        out[i] = {"probs": dict(zip(labels, p, strict=True))}
                else:
                    gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                                         do_sample=False, pad_token_id=pad, eos_token_id=tok.eos_token_id)
                    for i, g in zip(idx, gen[:, ids.shape[1]:].tolist(), strict=True):
                        out[i] = {"text": tok.decode([t for t in g if t != tok.eos_token_id],
                                                     skip_special_tokens=True)}
        return out

    return handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="'smollm2' (default), a folder, or '1b' (random 1B-class)")
    ap.add_argument("--versions", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=20, help="virtual tokens per version")
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--tasks", default="classify,generate")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--dtype", default="float32", help="vLLM dtype (the own runtime and PEFT run float32)")
    ap.add_argument("--device", default="auto", help="torch device of (a) and (b)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--max-model-len", type=int, default=512)
    ap.add_argument("--kv-cache-mb", type=float, default=1024, help="vLLM KV cache (CPU; ignored on GPU)")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="vLLM on GPU")
    ap.add_argument("--out", help="also write the JSON report to this file")
    args = ap.parse_args()

    import os

    import torch

    from promptreg.runtime.loader import pick_device, resolve_model_path

    device = pick_device(args.device)
    if device == "cpu":
        torch.set_num_threads(args.threads)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout carries the JSON report only
    if not torch.cuda.is_available():
        # vLLM's CPU backend keeps a core for its front end unless told otherwise: give it all of them, as
        # torch gets --threads, and say so in the report
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    tasks = [t for t in args.tasks.split(",") if t]
    engines = [e for e in args.engines.split(",") if e]
    with tempfile.TemporaryDirectory(prefix="promptreg-engines-") as tmp:
        tmp = Path(tmp)
        model_dir = build_1b(tmp / "llama-1b", resolve_model_path("smollm2")) if args.model == "1b" \
            else resolve_model_path(args.model)
        report = run(args, tmp, model_dir, device, tasks, engines)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


def run(args, tmp: Path, model_dir: Path, device: str, tasks: list[str], engines: list[str]) -> dict:
    import torch

    from promptreg.data.dataset_fetch import load_reviews
    from promptreg.softprompt.collate import Encoder

    reg, tok = register(tmp, model_dir, args.versions, args.tokens)
    reviews, _ = load_reviews()
    rng = random.Random(0)
    texts = [r["text"] for r in rng.sample(reviews, args.requests)]
    refs = [f"bench:{1 + i % args.versions}" for i in range(args.requests)]
    rng.shuffle(refs)
    log(f"{model_dir}: {args.versions} versions, {args.requests} requests, {args.clients} clients, tasks {tasks}")
    results: dict[str, dict] = {t: {} for t in tasks}
    warm = min(8, args.requests)

    def measure(name, task, call, reqs):
        drive(call, reqs[:warm], min(args.clients, warm))  # warm-up (first-call costs, caches)
        res = drive(call, reqs, args.clients)
        results[task][name] = res
        log(f"{task} {name}: {res['rps']:.2f} req/s, p50 {res['p50_s']:.3f} s, p99 {res['p99_s']:.3f} s")

    def requests_for(task):
        extra = {"max_new_tokens": args.new_tokens} if task == "generate" else {}
        return [{"ref": r, "text": t, **extra} for r, t in zip(refs, texts, strict=True)]

    wait = args.max_wait_ms / 1000
    if "peft" in engines:
        for task in tasks:
            handler = peft_engine(reg, model_dir, tok, args.versions, device, task, args.new_tokens)
            measure("peft", task, Batcher(handler, args.max_batch, wait), requests_for(task))
    if "promptreg" in engines:
        from promptreg.runtime.service import PromptRuntime

        own = PromptRuntime(reg, model_dir, device=device, max_versions=max(64, args.versions))
        own.base()
        for task in tasks:
            fn = own.classify if task == "classify" else own.generate
            measure("promptreg", task, Batcher(fn, args.max_batch, wait), requests_for(task))
        del own
    vllm_info = {}
    if {"vllm_embeds", "vllm_text"} & set(engines):
        from vllm import SamplingParams

        from promptreg.runtime.vllm_backends import _greedy_params
        from promptreg.runtime.vllm_engine import InProcessVllm, VllmRuntime
        from promptreg.softprompt.collate import label_token_ids

        t0 = time.perf_counter()
        gpu = torch.cuda.is_available()
        extra = {"gpu_memory_utilization": args.gpu_memory_utilization} if gpu else {}
        backend = InProcessVllm.start(model_dir, dtype=args.dtype, max_model_len=args.max_model_len,
                                      kv_cache_memory_bytes=None if gpu else int(args.kv_cache_mb * 2**20), **extra)
        vrt = VllmRuntime(reg, backend, max_versions=max(64, args.versions))
        vrt.base()
        vllm_info = {"start_s": round(time.perf_counter() - t0, 1), "engine": backend.describe()}
        plain = Encoder(tok, TEMPLATE, slots=0)
        label_ids = label_token_ids(tok, [VERBALIZER[k][0] for k in VERBALIZER])

        def text_call(task):
            def call(req):
                ids = plain.prompt(req["text"])[0]
                params = SamplingParams(max_tokens=1, logprob_token_ids=label_ids, detokenize=False,
                                        **_greedy_params()) if task == "classify" else \
                    SamplingParams(max_tokens=args.new_tokens, ignore_eos=True, stop_token_ids=[tok.eos_token_id],
                                   detokenize=False, **_greedy_params())
                (out,) = backend.submit([{"prompt_token_ids": ids}], [params])
                return {"tokens": len(out.outputs[0].token_ids)}
            return call

        for task in tasks:
            fn = vrt.classify if task == "classify" else vrt.generate
            if "vllm_embeds" in engines:
                measure("vllm_embeds", task, lambda req, fn=fn: fn([req])[0], requests_for(task))
            if "vllm_text" in engines:
                measure("vllm_text", task, text_call(task), requests_for(task))
        backend.close()
    return report_of(args, model_dir, device, tasks, results, vllm_info)


def report_of(args, model_dir, device, tasks, results, vllm_info) -> dict:
    import os

    import torch

    report: dict = {"setting": {"base_model": str(model_dir), "device_a_b": device, "torch_threads": torch.get_num_threads(),
                                "versions": args.versions, "virtual_tokens": args.tokens, "requests": args.requests,
                                "clients": args.clients, "new_tokens": args.new_tokens, "dtype_vllm": args.dtype,
                                "dtype_a_b": "float32", "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                                "vllm": vllm_info,
                                "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU")},
                    "goals_gpu": {"vllm_embeds_over_vllm_text": 0.8, "vllm_embeds_over_peft": 8.0}}
    for task in tasks:
        res = results[task]
        rep = {name: {"rps": round(r["rps"], 3), "p50_s": round(r["p50_s"], 4), "p99_s": round(r["p99_s"], 4),
                      "wall_s": round(r["wall_s"], 2)} for name, r in res.items()}
        rps = {name: r["rps"] for name, r in res.items()}
        ratios = {}
        for a, b in (("vllm_embeds", "vllm_text"), ("vllm_embeds", "peft"), ("promptreg", "peft"),
                     ("vllm_embeds", "promptreg")):
            if a in rps and b in rps:
                ratios[f"{a}_over_{b}"] = round(rps[a] / rps[b], 3)
        rep["ratios"] = ratios
        if "vllm_embeds" in res and "promptreg" in res:
            got, want = res["vllm_embeds"]["answers"], res["promptreg"]["answers"]
            if task == "classify":
                diffs = [max(abs(g["probs"][k] - w["probs"][k]) for k in w["probs"]) for g, w in zip(got, want, strict=True)]
                rep["agreement_vllm_vs_promptreg"] = {"max_abs_prob_diff": max(diffs),
                                                      "label_mismatches": sum(g["label"] != w["label"]
                                                                              for g, w in zip(got, want, strict=True))}
            else:
                rep["agreement_vllm_vs_promptreg"] = {"identical_generations": sum(
                    g["text"] == w["text"] for g, w in zip(got, want, strict=True)), "of": len(got)}
        report[task] = rep
    return report


if __name__ == "__main__":
    main()

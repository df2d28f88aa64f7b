"""Training throughput and model FLOPs utilisation on a GPU: promptreg vs PEFT prompt tuning, same
run, a 1B-class Llama (bench/_llama.py, random weights) in bf16.

FLOPs formula (stated, the same for both sides): per optimizer step
    FLOPs = 4 * N * tokens
where N counts every weight a token is multiplied by (bench/_llama.params_for_flops: all decoder
weights + the LM head; the embedding lookup is not a matmul) and tokens = batch x sequence (virtual
tokens included). 2*N*tokens is the forward; the backward through the ACTIVATIONS costs another
2*N*tokens; there are no weight gradients (the base is frozen), so the usual 6*N becomes 4*N.
Attention's score/value FLOPs are left out (small at these lengths), so MFU is slightly understated.
promptreg skips most of the LM head (label rows only) and still gets credited the full 4*N: MFU
measures useful model FLOPs per second, as PaLM defines it.
    MFU = FLOPs per second / the GPU's dense bf16 peak (--peak-tflops, or the table below by name).

Medians of ``--steps`` timed steps after ``--warmup`` steps (CUDA synchronised). Prints a table and
JSON with the ratio. Goal (issue 17): >= 2x PEFT tokens/s and >= 40 % MFU.

    python bench/train_gpu.py --batch 8 --seq 512 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                    "RTX 4090": 165.0, "B200": 2250.0}


def peak_for(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def timed(step, ids, mask, warmup: int, steps: int) -> list[float]:
    import torch

    for _ in range(warmup):
        step(ids, mask)
    torch.cuda.synchronize()
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(ids, mask)
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=20, help="virtual tokens")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    import torch
    from _llama import batch, build, ours_step, params_for_flops, peft_step

    name = torch.cuda.get_device_name(args.device) if torch.cuda.is_available() else "cpu"
    peak = args.peak_tflops or peak_for(name)
    results = {}
    for side in ("promptreg", "peft"):
        model = build(args.layers, args.precision, args.device)
        n_params = params_for_flops(model)
        if side == "promptreg":
            step = ours_step(model, "prompt_tuning", args.tokens, args.precision)
            ids, mask = batch(args.batch, args.seq + args.tokens, model.config.vocab_size, args.device)
        else:
            step = peft_step(model, args.tokens, args.precision)
            ids, mask = batch(args.batch, args.seq, model.config.vocab_size, args.device)
        torch.cuda.reset_peak_memory_stats()
        times = timed(step, ids, mask, args.warmup, args.steps)
        sec = statistics.median(times)
        tokens = args.batch * (args.seq + args.tokens)
        flops = 4 * n_params * tokens
        results[side] = {"tokens_per_s": round(tokens / sec, 1), "step_ms": round(1000 * sec, 2),
                         "tflops": round(flops / sec / 1e12, 2),
                         "mfu": round(flops / sec / (peak * 1e12), 4) if peak else None,
                         "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "n_params": n_params}
        del model, step
        torch.cuda.empty_cache()
    ratio = results["promptreg"]["tokens_per_s"] / results["peft"]["tokens_per_s"]
    print(f"{name}: {args.layers}-layer 1B-class Llama, {args.precision}, batch {args.batch} x {args.seq} "
          f"(+{args.tokens} virtual), FLOPs = 4*N*tokens, peak {peak} TFLOP/s")
    print(f"{'side':<10} {'tokens/s':>10} {'step ms':>9} {'TFLOP/s':>8} {'MFU':>7} {'peak GiB':>9}")
    for side, r in results.items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"{side:<10} {r['tokens_per_s']:>10} {r['step_ms']:>9} {r['tflops']:>8} {mfu:>7} {r['peak_mem_gib']:>9}")
    print(json.dumps({"benchmark": "train_gpu", "device": name, "config": vars(args), "flops_formula": "4*N*tokens",
                      "results": results, "throughput_ratio_promptreg_over_peft": round(ratio, 3)}))


if __name__ == "__main__":
    main()

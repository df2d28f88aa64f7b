"""Peak training memory per method, sequence length, batch size and precision: promptreg vs PEFT on
the same job, on a 1B-class Llama with random weights (bench/_llama.py).

Each cell runs in a fresh subprocess: build the model in the target dtype, reset the peak, run
``--steps`` training steps (forward, backward through the frozen model, AdamW on the prompt), read
the peak. On CUDA the peak is ``torch.cuda.max_memory_allocated``; on CPU it is the process's peak
resident set (VmHWM, reset through /proc/self/clear_refs after the model is built) minus the
resident set at that point, i.e. what training adds on top of the weights. ``weights_mib`` is the
model's parameter bytes. Both sides see the same tokens: promptreg gets N virtual slots + T text
tokens, PEFT gets T tokens and prepends its N virtual tokens.

On 2 CPU cores use few layers (``--layers 2``: 1B-class widths and vocabulary, fewer blocks; per-layer
figures scale linearly); on a GPU use the full 16. Prints a table and JSON (medians are not needed:
a peak is deterministic up to allocator noise).

    .venv/bin/python bench/train_memory.py --layers 2 --seq 64,256 --batch 1,4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cell(args) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from _llama import batch, build, ours_step, peft_step

    device = args.device
    model = build(args.layers, args.precision, device)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    n = args.tokens
    if args.side == "peft":
        step = peft_step(model, n, args.precision, gradient_checkpointing=args.gc)
        ids, mask = batch(args.b, args.t, model.config.vocab_size, device)
    else:
        step = ours_step(model, args.side, n, args.precision, gradient_checkpointing=args.gc)
        width = args.t + (n if args.side in ("prompt_tuning", "p_tuning") else 0)
        ids, mask = batch(args.b, width, model.config.vocab_size, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = _rss_kib("VmRSS") * 1024
    for _ in range(args.steps):
        step(ids, mask)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _rss_kib("VmHWM") * 1024 - base
    return {"weights_mib": round(weights / 2**20, 1), "train_peak_mib": round(peak / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2, help="decoder layers (16 = the full 1B config)")
    ap.add_argument("--seq", default="64,256")
    ap.add_argument("--batch", default="1,4")
    ap.add_argument("--precision", default="fp32", help="comma-separated: fp32,bf16")
    ap.add_argument("--methods", default="prompt_tuning,prefix_tuning,id_spam,peft")
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--device", default="cuda" if os.environ.get("CUDA_VISIBLE_DEVICES", "") != "" else "cpu")
    ap.add_argument("--cell", nargs=5, metavar=("SIDE", "T", "B", "PRECISION", "GC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        args.side, t, b, args.precision, gc = args.cell
        args.t, args.b, args.gc = int(t), int(b), gc == "1"
        print(json.dumps(cell(args)))
        return
    rows = []
    for precision in args.precision.split(","):
        for t in map(int, args.seq.split(",")):
            for b in map(int, args.batch.split(",")):
                row = {"precision": precision, "seq": t, "batch": b}
                for side in args.methods.split(","):
                    gc = "1" if args.gradient_checkpointing and side != "prefix_tuning" else "0"
                    cmd = [sys.executable, __file__, "--layers", str(args.layers), "--tokens", str(args.tokens),
                           "--steps", str(args.steps), "--device", args.device, "--cell", side, str(t), str(b),
                           precision, gc]
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    if proc.returncode != 0:
                        row[side] = f"error: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'}"
                        continue
                    out = json.loads(proc.stdout.strip().splitlines()[-1])
                    row["weights_mib"] = out["weights_mib"]
                    row[side] = out["train_peak_mib"]
                if isinstance(row.get("prompt_tuning"), float) and isinstance(row.get("peft"), float) and row["peft"]:
                    row["prompt_tuning_over_peft"] = round(row["prompt_tuning"] / row["peft"], 3)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    sides = args.methods.split(",")
    print(f"peak training memory above the weights (MiB), {args.layers}-layer 1B-class Llama, {args.device}, "
          f"{args.tokens} virtual tokens, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}")
    print("precision  seq  batch  weights  " + "  ".join(f"{s:>14}" for s in sides) + "  pt/peft")
    for r in rows:
        print(f"{r['precision']:>9} {r['seq']:>4} {r['batch']:>6} {r.get('weights_mib', 0):>8}  "
              + "  ".join(f"{str(r.get(s)):>14}" for s in sides) + f"  {r.get('prompt_tuning_over_peft', '-')}")
    print(json.dumps({"benchmark": "train_memory", "layers": args.layers, "device": args.device,
                      "gradient_checkpointing": args.gradient_checkpointing, "rows": rows}))


if __name__ == "__main__":
    main()

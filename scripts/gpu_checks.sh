#!/usr/bin/env bash
# Issue 17's GPU checks, as one prepared run (about 6-8 minutes on one H100/H200):
#   (1) bf16 vs fp32 training on CUDA at lr 0.1 (the old bf16 divergence), SmolLM2-135M, three seeds:
#       the demo's job (Rotten Tomatoes, batch 16, 200 steps, 400 test rows) and the heavy test's toy
#       job (16 steps); bench/bf16_gap.py, which also scores every trained prompt under both precisions;
#   (2) bench/train_gpu.py: tokens/s and MFU (FLOPs = 4*N*tokens: 2*N*tokens forward + 2*N*tokens
#       backward through activations, no weight gradients) of promptreg vs PEFT on a 1B-class Llama
#       with random weights in bf16, and bench/train_memory.py on the full 16-layer config;
#   (3) 2-GPU DDP (torchrun --nproc-per-node 2, nccl) of the demo job, when 2 GPUs exist (the CLI: needs
#       the whole install, `pip install -e .`).
# (1) and (2) import only promptreg's training code, torch, transformers, peft and (for SmolLM2's GGUF)
# gguf, so they run on a bare CUDA image with those packages.
# Usage: CHECKS="1 2 3" DATA=<rotten-tomatoes folder> PYTHON=python3 timeout 540 scripts/gpu_checks.sh
# Output: $OUT (default ./gpu_checks_out)/*.json|*.log; a summary on stdout. Fails on the first broken check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CHECKS=${CHECKS:-1 2 3}
OUT=${OUT:-./gpu_checks_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=8 PROMPTREG_HOME=$OUT/home PYTHONUNBUFFERED=1
$PY - <<'PY'
import torch, transformers, peft
assert torch.cuda.is_available(), "no CUDA device"
print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__,
      "gpus", torch.cuda.device_count(), torch.cuda.get_device_name(0))
PY
has() { case " $CHECKS " in *" $1 "*) return 0;; *) return 1;; esac; }

if has 1; then
  echo "== (1) bf16 vs fp32 on CUDA, SmolLM2"
  $PY -c "from promptreg.data.model_fetch import fetch_smollm2; print('model', fetch_smollm2())"
  if [ -n "${DATA:-}" ]; then
    $PY bench/bf16_gap.py --device cuda --data "$DATA" --steps 200 --seeds 0,1,2 --trainings fp32,bf16 \
      > "$OUT/bf16_demo.json" 2> "$OUT/bf16_demo.log" || { tail -5 "$OUT/bf16_demo.log"; exit 1; }
  fi
  $PY bench/bf16_gap.py --device cuda --steps 16 --seeds 0,1,2 > "$OUT/bf16_toy.json" 2> "$OUT/bf16_toy.log" \
    || { tail -5 "$OUT/bf16_toy.log"; exit 1; }
  $PY - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("bf16_*.json")):
    r = json.loads(f.read_text())
    print(f"{r['job']} on {r['device']}: {r['steps']} steps, batch {r['batch_size']}, lr {r['lr']}, {r['eval_rows']} rows")
    gaps = []
    for run in r["runs"]:
        acc = run["trained_eval_accuracy"]
        gaps.append(acc["bf16"] - acc["fp32"])
        print(f"  seed {run['seed']}: trained {acc}  scored {run['scored']}  seconds {run.get('train_seconds')}")
    print(f"  median bf16 - fp32: {statistics.median(gaps):+.4f}")
PY
fi

if has 2; then
  echo "== (2) tokens/s and MFU, promptreg vs PEFT, 1B-class Llama bf16"
  for b in 8 32; do $PY bench/train_gpu.py --batch $b --seq 512 --steps 20 | tee "$OUT/train_gpu_b$b.log"; done
  $PY bench/train_memory.py --layers 16 --seq 1024 --batch 1,8 --precision bf16 --device cuda \
    2>/dev/null | tee "$OUT/train_memory.log"
fi

if has 3; then
  if [ "$($PY -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ] && [ -n "${DATA:-}" ]; then
    echo "== (3) 2-GPU DDP"
    $PY -m torch.distributed.run --standalone --nproc-per-node 2 -m promptreg.cli.main train --model smollm2 \
      --train "$DATA/train.jsonl" --test "$DATA/test.jsonl" --test-limit 400 --labels negative,positive \
      --template $'{virtual}Review: {text}\nSentiment:' --num-virtual-tokens 8 --init labels --max-steps 200 \
      --batch-size 16 --lr 0.1 --no-progress --json --device cuda --precision bf16 --output "$OUT/art-ddp" \
      > "$OUT/train-ddp.json"
    $PY -c "import json; r = json.load(open('$OUT/train-ddp.json')); print('ddp test accuracy', r['metrics']['test_accuracy'], 'tokens/s', r['tokens_per_second'])"
  else
    echo "== (3) skipped: one GPU (or no DATA)"
  fi
fi
echo "gpu checks: done"

#!/usr/bin/env bash
# Issue 17's GPU checks, as one prepared run (about 6-8 minutes on one H100/H200):
#   (1) bf16 vs fp32 training of a sentiment job on CUDA at lr 0.1 (the old bf16 divergence): test
#       accuracies must agree within 1 point;
#   (2) bench/train_gpu.py: tokens/s and MFU (FLOPs = 4*N*tokens: 2*N*tokens forward + 2*N*tokens
#       backward through activations, no weight gradients) of promptreg vs PEFT on a 1B-class Llama
#       with random weights in bf16;
#   (3) 2-GPU DDP (torchrun --nproc-per-node 2, nccl) of the same job as (1), when 2 GPUs exist;
#   plus bench/train_memory.py on the full 16-layer config.
# Usage: MODEL=<transformers folder or smollm2> PYTHON=python3 timeout 540 scripts/gpu_checks.sh
# Output: $OUT (default ./gpu_checks_out)/*.json|*.log; a summary on stdout. Fails on the first broken check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODEL=${MODEL:-smollm2}
OUT=${OUT:-./gpu_checks_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD OMP_NUM_THREADS=4 PROMPTREG_HOME=$OUT/home
$PY - <<'PY'
import torch, transformers, peft
assert torch.cuda.is_available(), "no CUDA device"
print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__,
      "gpus", torch.cuda.device_count(), torch.cuda.get_device_name(0))
PY
$PY - "$OUT" <<'PY'
import sys
from pathlib import Path
from tests.test_training import toy_examples, write_jsonl
out = Path(sys.argv[1])
write_jsonl(out / "train.jsonl", toy_examples(512, 1)); write_jsonl(out / "test.jsonl", toy_examples(400, 2))
PY
TRAIN=(train --model "$MODEL" --train "$OUT/train.jsonl" --test "$OUT/test.jsonl" --labels negative,positive
       --template "{virtual}Review: {text} Sentiment:" --num-virtual-tokens 8 --epochs 2 --batch-size 16 --lr 0.1
       --no-progress --json --device cuda)
echo "== (1) bf16 vs fp32 on CUDA"
for p in fp32 bf16; do
  $PY -m promptreg.cli.main "${TRAIN[@]}" --precision $p --output "$OUT/art-$p" > "$OUT/train-$p.json"
done
$PY - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
acc = {p: json.load(open(f"{out}/train-{p}.json"))["metrics"]["test_accuracy"] for p in ("fp32", "bf16")}
tps = {p: json.load(open(f"{out}/train-{p}.json"))["tokens_per_second"] for p in ("fp32", "bf16")}
print("test accuracy", acc, "tokens/s", tps)
assert abs(acc["fp32"] - acc["bf16"]) <= 0.01, f"bf16 and fp32 differ by more than 1 point: {acc}"
PY
echo "== (2) tokens/s and MFU, promptreg vs PEFT, 1B-class Llama bf16"
$PY bench/train_gpu.py --batch 8 --seq 512 --steps 20 | tee "$OUT/train_gpu.log"
$PY bench/train_memory.py --layers 16 --seq 256,1024 --batch 1,8 --precision bf16 --device cuda \
  2>/dev/null | tee "$OUT/train_memory.log"
if [ "$($PY -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  echo "== (3) 2-GPU DDP"
  $PY -m torch.distributed.run --standalone --nproc-per-node 2 -m promptreg.cli.main "${TRAIN[@]}" \
    --precision bf16 --output "$OUT/art-ddp" > "$OUT/train-ddp.json"
  $PY -c "import json; r = json.load(open('$OUT/train-ddp.json')); print('ddp test accuracy', r['metrics']['test_accuracy'], 'tokens/s', r['tokens_per_second'])"
else
  echo "== (3) skipped: one GPU"
fi
echo "gpu checks: done"

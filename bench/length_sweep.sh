#!/usr/bin/env bash
# The prompt-length sweep of docs/training.md ("Prompt length on SmolLM2"): prompt tuning with label
# init on the demo task (Rotten Tomatoes: `promptreg datasets fetch rotten-tomatoes DATA_DIR`), 1/4/8/20
# virtual tokens, the same small CPU budget per trial (override with STEPS, BATCH, EVAL_LIMIT,
# TRAIN_LIMIT). Usage: bench/length_sweep.sh DATA_DIR [extra sweep options]
# (e.g. --min-steps 10 to let successive halving stop the lengths that fall behind).
set -euo pipefail
data=${1:?usage: bench/length_sweep.sh DATA_DIR [options]}
shift
exec nice -n 10 promptreg sweep --model smollm2 \
  --train "$data/train.jsonl" --eval "$data/eval.jsonl" --labels negative,positive \
  --method prompt_tuning --init labels --num-virtual-tokens 1,4,8,20 --lr 0.1 \
  --max-steps "${STEPS:-30}" --batch-size "${BATCH:-8}" --eval-limit "${EVAL_LIMIT:-200}" \
  --train-limit "${TRAIN_LIMIT:-2000}" --max-text-tokens 48 --device cpu "$@"

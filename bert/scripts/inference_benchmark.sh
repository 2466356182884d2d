#!/usr/bin/env bash
# BERT inference throughput and latency over the grid of NVIDIA's inference tables:
# model (base, large) x sequence length (128, 384) x batch size (1, 2, 4, 8) x precision,
# random weights and inputs (see bert/benchmark.py).
#
#   bert/scripts/inference_benchmark.sh [MODEL] [TASK] [extra bert.benchmark flags...]
#
#   MODEL  base, large or tiny (default: base, then large)
#   TASK   squad, classify or pretrain (default: squad)
#   e.g.   bert/scripts/inference_benchmark.sh base squad --compare-hf
#
# On a GPU (nvidia-smi answers): fp16, tf32, fp32 and bf16, 1024 timed calls after 20
# warm-up calls. On the CPU: fp32 and bf16, 10 timed calls after 2 (a 2-core BERT-large
# step at sequence length 384 takes seconds). Environment overrides: SEQ_LENS,
# BATCH_SIZES, MATHS (comma-separated), STEPS, WARMUP, RESULTS (default
# results/bert_benchmark). Each model writes RESULTS/inference_<model>_<task>_<device>
# .txt (the printed tables), .json (all rows) and .log (DLLogger lines).
set -euo pipefail
cd "$(dirname "$0")/../.."

models=${1:-base large}
task=${2:-squad}
shift $(($# < 2 ? $# : 2))

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  device=cuda; maths=${MATHS:-fp16,tf32,fp32,bf16}; steps=${STEPS:-1024}; warmup=${WARMUP:-20}
else
  device=cpu; maths=${MATHS:-fp32,bf16}; steps=${STEPS:-10}; warmup=${WARMUP:-2}
fi
results=${RESULTS:-results/bert_benchmark}
mkdir -p "$results"

for model in $models; do
  out="$results/inference_${model}_${task}_${device}"
  echo "=== BERT-$model $task on $device: $maths -> $out.{txt,json,log}"
  python -m bert.benchmark --model "$model" --task "$task" --mode inference \
    --device "$device" --math "$maths" --seq-len "${SEQ_LENS:-128,384}" \
    --batch-size "${BATCH_SIZES:-1,2,4,8}" --steps "$steps" --warmup "$warmup" \
    --json "$out.json" --log-file "$out.log" "$@" | tee "$out.txt"
done

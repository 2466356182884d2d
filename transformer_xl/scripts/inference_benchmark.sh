#!/usr/bin/env bash
# Inference throughput and latency of a trained Transformer-XL over batch sizes,
# precisions and runtimes, one GPU:
#
#   transformer_xl/scripts/inference_benchmark.sh CHECKPOINT [RECIPE] [BATCH_SIZES] [MATHS] [TYPES]
#
# defaults: wt103_base, "1 2 4 8 16 32", "fp32 fp16" on GPUs ("fp32 bf16" on the CPU),
# "pytorch torchscript". Each run prints the loss, throughput and latency summary and,
# with --save_data, leaves its latencies in WORK_DIR/<run>/eval_data_test.json.
set -euo pipefail
cd "$(dirname "$0")/../.."

checkpoint=${1:?usage: $0 CHECKPOINT [RECIPE] [BATCH_SIZES] [MATHS] [TYPES]}
recipe=${2:-wt103_base}
batches=${3:-1 2 4 8 16 32}
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  maths=${4:-fp32 fp16}; device=cuda
else
  maths=${4:-fp32 bf16}; device=cpu
fi
types=${5:-pytorch torchscript}
work=${WORK_DIR:-LM-TFM}/inference_benchmark

for math in $maths; do
  for type in $types; do
    for bs in $batches; do
      echo "=== $recipe math $math type $type batch $bs"
      python -m transformer_xl.eval --config_file "transformer_xl/configs/${recipe}.yaml" \
        --model "$checkpoint" --device "$device" --precision "$math" --type "$type" \
        --batch_size "$bs" --split test --save_data --log_interval 0 \
        --work_dir "$work/${math}_${type}_b${bs}" ${DATA:+--data "$DATA"}
    done
  done
done

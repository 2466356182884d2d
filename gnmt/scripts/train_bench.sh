#!/usr/bin/env bash
# Training throughput: a fixed number of steps without evaluation; the epoch summary
# line reports sentences/s and tokens/s summed over GPUs.
#
#   gnmt/scripts/train_bench.sh [GPUS] [MATH] [BATCH_PER_GPU] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/../.."

gpus=${1:-1}
math=${2:-fp16}
batch=${3:-128}
steps=${4:-500}
out=${RESULTS:-results/gnmt_bench}/${gpus}x${math}_b${batch}

exec python -m torch.distributed.run --standalone --nproc_per_node "$gpus" -m gnmt.train \
  --dataset-dir "${DATASET_DIR:-data/wmt16_de_en}" \
  --save-dir "$out" --save-freq 1000000 \
  --math "$math" --train-batch-size "$batch" \
  --epochs 1 --max-steps "$steps" --no-eval --print-freq 50

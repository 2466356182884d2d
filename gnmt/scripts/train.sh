#!/usr/bin/env bash
# Train GNMT v2 with the recipe's hyper-parameters on one node.
#
#   gnmt/scripts/train.sh [GPUS] [MATH] [BATCH_PER_GPU] [extra train.py flags...]
#
#   GPUS           1 or 8 (any count works; default: all visible GPUs)
#   MATH           fp16 | bf16 | tf32 | fp32 (default fp16)
#   BATCH_PER_GPU  sentences per GPU per micro-step (default 128); the global batch
#                  stays 1024 sentences, filled by gradient accumulation on fewer GPUs
#
# Environment: DATASET_DIR (default data/wmt16_de_en), RESULTS (default results/gnmt),
# SEED (default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."

gpus=${1:-$(nvidia-smi -L 2>/dev/null | wc -l)}
math=${2:-fp16}
batch=${3:-128}
shift $(( $# < 3 ? $# : 3 ))
[[ "$gpus" -ge 1 ]] || { echo "no GPU visible; pass GPUS explicitly" >&2; exit 1; }

exec python -m torch.distributed.run --standalone --nproc_per_node "$gpus" -m gnmt.train \
  --dataset-dir "${DATASET_DIR:-data/wmt16_de_en}" \
  --save-dir "${RESULTS:-results/gnmt}" \
  --math "$math" \
  --seed "${SEED:-1}" \
  --train-batch-size "$batch" \
  --train-global-batch-size 1024 \
  --lr 2e-3 --warmup-steps 200 --remain-steps 0.666 --decay-steps 4 --decay-factor 0.5 \
  --epochs 6 --target-bleu 24.4 \
  --resume \
  "$@"

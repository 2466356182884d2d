#!/usr/bin/env bash
# BERT pre-training with Adam, as in the original BERT paper: global batch 256, 90% of
# the steps at sequence length 128, then 10% at 512 from the first part's last
# checkpoint (weights and Adam's state), one linear warm-up and decay over both parts.
# The arguments are the reference's:
#
#   bert/scripts/run_pretraining_adam.sh <train_batch_size_per_gpu> <eval_batch_size>
#     <learning_rate_per_gpu> <precision> <use_xla> <num_gpus> <warmup_steps>
#     <train_steps> <save_checkpoint_steps>
#
#   bert/scripts/run_pretraining_adam.sh 32 8 1.25e-5 fp16 true 8 10000 1000000 10000
#
# Defaults: that line (32 x 8 GPUs = 256 sequences, 1.25e-5 x 8 = 1e-4). The learning
# rate is per GPU and multiplied by <num_gpus>; use_xla=true compiles the model
# (torch.compile). Optimizer: AdamW (weight decay 0.01, none on biases and LayerNorm),
# gradients clipped to norm 1.0. At length 512 each GPU's batch is split into
# ACCUMULATION_PHASE2 (default 4) micro-batches to fit in memory.
#
# Environment: DATADIR_PHASE1 / DATADIR_PHASE2, EVAL_DIR_PHASE1 / EVAL_DIR_PHASE2,
# RESULTS_DIR, VOCAB_FILE, BERT_CONFIG, BERT_MODEL (large), SEED, PHASES, EXTRA_ARGS as
# in run_pretraining_lamb.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/common.sh
source bert/scripts/common.sh

train_batch_size=${1:-32}
eval_batch_size=${2:-8}
learning_rate=${3:-1.25e-5}
precision=${4:-fp16}
use_xla=${5:-true}
num_gpus=${6:-8}
warmup_steps=${7:-10000}
train_steps=${8:-1000000}
save_checkpoint_steps=${9:-10000}

accumulation_phase2=${ACCUMULATION_PHASE2:-4}
if (( train_batch_size % accumulation_phase2 )); then
  echo "train_batch_size_per_gpu $train_batch_size is not a multiple of ACCUMULATION_PHASE2 $accumulation_phase2" >&2
  exit 2
fi
RESULTS_DIR=${RESULTS_DIR:-results/bert_pretraining_adam}
steps_phase1=$((train_steps * 9 / 10))
steps_phase2=$((train_steps - steps_phase1))
# One linear schedule over both parts: the first decays towards 0 at <train_steps> and
# stops at 9/10 of it; the second starts there, at rate x steps_phase2 / train_steps.
rates=$(python -c 'import sys; r = float(sys.argv[1]) * int(sys.argv[2]); print(r, r * int(sys.argv[3]) / int(sys.argv[4]))' \
  "$learning_rate" "$num_gpus" "$steps_phase2" "$train_steps")
read -r rate_phase1 rate_phase2 <<< "$rates"

set_pretraining_args adam "$precision" "$save_checkpoint_steps" "$eval_batch_size" \
  "$use_xla" "${BERT_MODEL:-large}" "$RESULTS_DIR"
pretraining_args+=(--lr_decay_power 1.0)

for phase in ${PHASES:-1 2}; do
  if [[ "$phase" == 1 ]]; then
    launch_pretraining "$num_gpus" "$RESULTS_DIR/phase1.log" \
      --input_dir "$DATADIR_PHASE1" \
      --max_seq_length 128 --max_predictions_per_seq 20 \
      --train_batch_size "$train_batch_size" --gradient_accumulation_steps 1 \
      --learning_rate "$rate_phase1" --warmup_steps "$warmup_steps" \
      --max_steps "$steps_phase1" --decay_steps "$train_steps" \
      ${EVAL_DIR_PHASE1:+--eval_dir "$EVAL_DIR_PHASE1"}
  else
    launch_pretraining "$num_gpus" "$RESULTS_DIR/phase2.log" --phase2 \
      --input_dir "$DATADIR_PHASE2" \
      --max_seq_length 512 --max_predictions_per_seq 80 \
      --train_batch_size $((train_batch_size / accumulation_phase2)) \
      --gradient_accumulation_steps "$accumulation_phase2" \
      --learning_rate "$rate_phase2" --warmup_steps 0 --max_steps "$steps_phase2" \
      ${EVAL_DIR_PHASE2:+--eval_dir "$EVAL_DIR_PHASE2"}
  fi
done

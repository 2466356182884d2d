#!/usr/bin/env bash
# BERT pre-training with LAMB on one node: phase 1 (sequence length 128), then phase 2
# (512) from phase 1's last checkpoint. The arguments are the reference's, in its order:
#
#   bert/scripts/run_pretraining_lamb.sh <train_batch_size_phase1> <train_batch_size_phase2>
#     <eval_batch_size> <learning_rate_phase1> <learning_rate_phase2> <precision> <use_xla>
#     <num_gpus> <warmup_steps_phase1> <warmup_steps_phase2> <train_steps>
#     <save_checkpoint_steps> <num_accumulation_phase1> <num_accumulation_steps_phase2>
#     <bert_model>
#
#   bert/scripts/run_pretraining_lamb.sh 64 16 8 7.5e-4 5e-4 fp16 true 8 2000 200 7820 100 128 256 large
#
# Defaults (no arguments): that line, the DGX A100 8-GPU fp16 recipe. As in the reference:
# batch sizes are per GPU and micro-step (global batch = batch x accumulation x GPUs);
# learning rates are per GPU and multiplied by <num_gpus> (7.5e-4 x 8 = 6e-3);
# phase 1 runs 9/10 and phase 2 2/10 of <train_steps> (7820: 7038 and 1564 steps);
# precision is fp16, tf32, fp32 or bf16; use_xla=true compiles the model with
# torch.compile (PyTorch's counterpart of XLA); bert_model is base or large.
#
# Environment: DATADIR_PHASE1 / DATADIR_PHASE2 (HDF5 shards of each phase; default: the
# training folders `python -m bert.data.prepare all` writes under data/bert),
# EVAL_DIR_PHASE1 / EVAL_DIR_PHASE2 (optional held-out shards: evaluated at the end of
# the phase with <eval_batch_size>), RESULTS_DIR (checkpoints and logs; both phases share
# it), VOCAB_FILE, BERT_CONFIG (a bert_config.json instead of <bert_model>), SEED,
# PHASES ("1 2", or just "2"), EXTRA_ARGS (more run_pretraining.py flags).
# A rerun continues where the last run stopped (--resume_from_checkpoint).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/common.sh
source bert/scripts/common.sh

train_batch_size_phase1=${1:-64}
train_batch_size_phase2=${2:-16}
eval_batch_size=${3:-8}
learning_rate_phase1=${4:-7.5e-4}
learning_rate_phase2=${5:-5e-4}
precision=${6:-fp16}
use_xla=${7:-true}
num_gpus=${8:-8}
warmup_steps_phase1=${9:-2000}
warmup_steps_phase2=${10:-200}
train_steps=${11:-7820}
save_checkpoint_steps=${12:-100}
num_accumulation_phase1=${13:-128}
num_accumulation_steps_phase2=${14:-256}
bert_model=${15:-large}

RESULTS_DIR=${RESULTS_DIR:-results/bert_pretraining}

set_global_lr "$learning_rate_phase1" "$num_gpus"
rate_phase1=$global_lr
set_global_lr "$learning_rate_phase2" "$num_gpus"
rate_phase2=$global_lr
set_pretraining_args lamb "$precision" "$save_checkpoint_steps" "$eval_batch_size" \
  "$use_xla" "$bert_model" "$RESULTS_DIR"

for phase in ${PHASES:-1 2}; do
  if [[ "$phase" == 1 ]]; then
    launch_pretraining "$num_gpus" "$RESULTS_DIR/phase1.log" \
      --input_dir "$DATADIR_PHASE1" \
      --max_seq_length 128 --max_predictions_per_seq 20 \
      --train_batch_size "$train_batch_size_phase1" \
      --gradient_accumulation_steps "$num_accumulation_phase1" \
      --learning_rate "$rate_phase1" \
      --warmup_steps "$warmup_steps_phase1" --max_steps $((train_steps * 9 / 10)) \
      ${EVAL_DIR_PHASE1:+--eval_dir "$EVAL_DIR_PHASE1"}
  else
    launch_pretraining "$num_gpus" "$RESULTS_DIR/phase2.log" --phase2 \
      --input_dir "$DATADIR_PHASE2" \
      --max_seq_length 512 --max_predictions_per_seq 80 \
      --train_batch_size "$train_batch_size_phase2" \
      --gradient_accumulation_steps "$num_accumulation_steps_phase2" \
      --learning_rate "$rate_phase2" \
      --warmup_steps "$warmup_steps_phase2" --max_steps $((train_steps * 2 / 10)) \
      ${EVAL_DIR_PHASE2:+--eval_dir "$EVAL_DIR_PHASE2"}
  fi
done

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

DATADIR_PHASE1=${DATADIR_PHASE1:-data/bert/hdf5_lower_case_1_seq_len_128_max_pred_20_masked_lm_prob_0.15_random_seed_12345_dupe_factor_5/training}
DATADIR_PHASE2=${DATADIR_PHASE2:-data/bert/hdf5_lower_case_1_seq_len_512_max_pred_80_masked_lm_prob_0.15_random_seed_12345_dupe_factor_5/training}
RESULTS_DIR=${RESULTS_DIR:-results/bert_pretraining}
read -r -a extra_args <<< "${EXTRA_ARGS:-}"

total_rate() {  # per-GPU rate x GPUs
  python -c 'import sys; print(float(sys.argv[1]) * int(sys.argv[2]))' "$1" "$num_gpus"
}

common=(--precision "$precision" --num_steps_per_checkpoint "$save_checkpoint_steps"
  --eval_batch_size "$eval_batch_size" --output_dir "$RESULTS_DIR" --seed "${SEED:-12439}"
  --resume_from_checkpoint --optimizer lamb)
case "$use_xla" in
  true) common+=(--compile) ;;
  false) ;;
  *) echo "use_xla must be true or false, not '$use_xla'" >&2; exit 2 ;;
esac
if [[ -n "${BERT_CONFIG:-}" ]]; then
  common+=(--config_file "$BERT_CONFIG")
else
  common+=(--bert_model "$bert_model")
fi
[[ -n "${VOCAB_FILE:-}" ]] && common+=(--vocab_file "$VOCAB_FILE")

mkdir -p "$RESULTS_DIR"
launch() {  # launch LOG_NAME FLAGS...: one process per GPU, output also to the log file
  local log="$RESULTS_DIR/$1"
  shift
  python -m torch.distributed.run --standalone --nproc_per_node "$num_gpus" \
    -m bert.run_pretraining "${common[@]}" "$@" "${extra_args[@]}" 2>&1 | tee -a "$log"
}

for phase in ${PHASES:-1 2}; do
  if [[ "$phase" == 1 ]]; then
    launch phase1.log --input_dir "$DATADIR_PHASE1" \
      --max_seq_length 128 --max_predictions_per_seq 20 \
      --train_batch_size "$train_batch_size_phase1" \
      --gradient_accumulation_steps "$num_accumulation_phase1" \
      --learning_rate "$(total_rate "$learning_rate_phase1")" \
      --warmup_steps "$warmup_steps_phase1" --max_steps $((train_steps * 9 / 10)) \
      ${EVAL_DIR_PHASE1:+--eval_dir "$EVAL_DIR_PHASE1"}
  else
    launch phase2.log --phase2 --input_dir "$DATADIR_PHASE2" \
      --max_seq_length 512 --max_predictions_per_seq 80 \
      --train_batch_size "$train_batch_size_phase2" \
      --gradient_accumulation_steps "$num_accumulation_steps_phase2" \
      --learning_rate "$(total_rate "$learning_rate_phase2")" \
      --warmup_steps "$warmup_steps_phase2" --max_steps $((train_steps * 2 / 10)) \
      ${EVAL_DIR_PHASE2:+--eval_dir "$EVAL_DIR_PHASE2"}
  fi
done

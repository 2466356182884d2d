# shellcheck shell=bash
# Helpers shared by the BERT fine-tuning scripts (sourced, not run). Each sets globals
# for the calling script and exits with a usage message on a bad value.
# shellcheck disable=SC2034  # the globals are read by the scripts that source this file

# bert_dir: $BERT_DIR, else the folder of Google's released weights for "large" or
# "base" (vocab.txt, bert_config.json), as the reference's download script places them.
set_bert_dir() {
  if [[ -n "${BERT_DIR:-}" ]]; then
    bert_dir=$BERT_DIR
    return
  fi
  case "$1" in
    large) bert_dir=data/download/google_pretrained_weights/uncased_L-24_H-1024_A-16 ;;
    base) bert_dir=data/download/google_pretrained_weights/uncased_L-12_H-768_A-12 ;;
    *) echo "bert_model must be large or base, not '$1' (or set BERT_DIR)" >&2; exit 2 ;;
  esac
}

# precision: the value for --precision (amp is fp16, as in the reference).
set_precision() {
  case "$1" in
    fp16 | fp32 | tf32 | bf16) precision=$1 ;;
    amp) precision=fp16 ;;
    *) echo "precision must be fp16, fp32, tf32, bf16 or amp, not '$1'" >&2; exit 2 ;;
  esac
}

# model_args: --init_checkpoint CHECKPOINT, the config and vocabulary of bert_dir where
# the checkpoint does not carry them (a .pt file), and --torch_compile for use_xla=true.
# XLA is TensorFlow's compiler; torch.compile is PyTorch's counterpart.
set_model_args() {
  local checkpoint=$1 use_xla=$2
  model_args=(--init_checkpoint "$checkpoint")
  [[ -f "$checkpoint" ]] && model_args+=(--config_file "$bert_dir/bert_config.json")
  [[ -f "$checkpoint/vocab.txt" ]] || model_args+=(--vocab_file "$bert_dir/vocab.txt")
  case "$use_xla" in
    true) model_args+=(--torch_compile) ;;
    false) ;;
    *) echo "use_xla must be true or false, not '$use_xla'" >&2; exit 2 ;;
  esac
}

# global_lr: learning_rate_per_gpu x num_gpus, as the reference scales it.
set_global_lr() {
  global_lr=$(awk -v lr="$1" -v n="$2" 'BEGIN { printf "%g", lr * n }')
}

# --- pre-training (run_pretraining_lamb.sh, run_pretraining_adam.sh) ----------------------

# The shard folders `python -m bert.data.prepare all` writes for the two phases.
DATADIR_PHASE1=${DATADIR_PHASE1:-data/bert/hdf5_lower_case_1_seq_len_128_max_pred_20_masked_lm_prob_0.15_random_seed_12345_dupe_factor_5/training}
DATADIR_PHASE2=${DATADIR_PHASE2:-data/bert/hdf5_lower_case_1_seq_len_512_max_pred_80_masked_lm_prob_0.15_random_seed_12345_dupe_factor_5/training}

# pretraining_args: the run_pretraining.py flags both phases share.
#   set_pretraining_args OPTIMIZER PRECISION SAVE_STEPS EVAL_BATCH USE_XLA BERT_MODEL RESULTS_DIR
# BERT_CONFIG (a bert_config.json) replaces BERT_MODEL; VOCAB_FILE and SEED are read too.
set_pretraining_args() {
  local use_xla=$5
  set_precision "$2"
  pretraining_args=(--optimizer "$1" --precision "$precision" --num_steps_per_checkpoint "$3"
    --eval_batch_size "$4" --output_dir "$7" --seed "${SEED:-12439}" --resume_from_checkpoint)
  case "$use_xla" in
    true) pretraining_args+=(--compile) ;;  # torch.compile: PyTorch's counterpart of XLA
    false) ;;
    *) echo "use_xla must be true or false, not '$use_xla'" >&2; exit 2 ;;
  esac
  if [[ -n "${BERT_CONFIG:-}" ]]; then
    pretraining_args+=(--config_file "$BERT_CONFIG")
  else
    pretraining_args+=(--bert_model "$6")
  fi
  [[ -n "${VOCAB_FILE:-}" ]] && pretraining_args+=(--vocab_file "$VOCAB_FILE")
  read -r -a extra_args <<< "${EXTRA_ARGS:-}"
  mkdir -p "$7"
}

# launch_pretraining GPUS LOG FLAGS...: one process per GPU, output also to LOG.
launch_pretraining() {
  local gpus=$1 log=$2
  shift 2
  python -m torch.distributed.run --standalone --nproc_per_node "$gpus" \
    -m bert.run_pretraining "${pretraining_args[@]}" "$@" "${extra_args[@]}" 2>&1 | tee -a "$log"
}

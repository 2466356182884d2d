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

# shellcheck shell=bash
# Helpers of the BioBERT scripts (sourced from the repository root, not run), on top of
# the BERT scripts' own (bert/scripts/common.sh, sourced here). Each sets globals for the
# calling script and exits with a usage message on a bad value.
# shellcheck disable=SC2034  # the globals are read by the scripts that source this file

# shellcheck source=SCRIPTDIR/../common.sh
source bert/scripts/common.sh

# casing: the reference's <cased> (true or false) as our folder names and flags: casing
# (cased / uncased), lower_case (1 / 0, as in the shard folders' names) and case_flag.
set_casing() {
  case "$1" in
    true) casing=cased lower_case=0 case_flag=--no-do_lower_case ;;
    false) casing=uncased lower_case=1 case_flag=--do_lower_case ;;
    *) echo "cased must be true or false, not '$1'" >&2; exit 2 ;;
  esac
}

# bert_dir: $BERT_DIR, else Google's BERT weights of that size and casing as
# `python -m bert.download weights --models bert-base-uncased ...` lays them out.
set_biobert_dir() {
  case "$1" in
    base | large) bert_dir=${BERT_DIR:-data/bert/weights/bert-$1-$casing} ;;
    *) echo "bert_model must be base or large, not '$1' (or set BERT_DIR)" >&2; exit 2 ;;
  esac
}

# The reference's task names: module (ours), data_dir and seq_length (its inference
# length). BIOBERT_DATA is the folder `python -m bert.biobert_download` fills (default
# data/biobert); DATASET_DIR names the task's folder itself.
set_task() {
  local data=${BIOBERT_DATA:-data/biobert}
  case "$1" in
    ner_bc5cdr-chem) module=bert.run_ner data_dir=$data/BC5CDR/chem seq_length=128 ;;
    ner_bc5cdr-disease) module=bert.run_ner data_dir=$data/BC5CDR/disease seq_length=128 ;;
    rel_chemprot) module=bert.run_re data_dir=$data/chemprot seq_length=512 ;;
    *) echo "task must be ner_bc5cdr-chem, ner_bc5cdr-disease or rel_chemprot, not '$1'" >&2
       exit 2 ;;
  esac
  data_dir=${DATASET_DIR:-$data_dir}
}

# finetune_biobert TASK INIT_CHECKPOINT TRAIN_BATCH_SIZE LEARNING_RATE CASED PRECISION \
#   USE_XLA NUM_GPU SEQ_LENGTH BERT_MODEL EVAL_BATCH_SIZE EPOCHS [FLAGS...]
# Fine-tune on the task's training file with one process per GPU, then score dev and
# test; learning rate per GPU (times NUM_GPU, as the reference's Horovod runs scale it).
finetune_biobert() {
  local task=$1 checkpoint=$2 batch=$3 rate=$4 cased=$5 use_xla=$7 gpus=$8 length=$9
  local model=${10} eval_batch=${11} epochs=${12}
  set_precision "$6"
  shift 12
  set_task "$task"
  set_casing "$cased"
  set_biobert_dir "$model"
  set_model_args "$checkpoint" "$use_xla"
  set_global_lr "$rate" "$gpus"
  local results=${RESULTS_DIR:-results/biobert_$task}
  mkdir -p "$results"
  python -m torch.distributed.run --standalone --nproc_per_node "$gpus" -m "$module" \
    --data_dir "$data_dir" --bert_model "$model" "${model_args[@]}" "$case_flag" \
    --do_train --do_eval --do_predict --resume --train_batch_size "$batch" \
    --learning_rate "$global_lr" --precision "$precision" --max_seq_length "$length" \
    --num_train_epochs "$epochs" --eval_batch_size "$eval_batch" --output_dir "$results" \
    "$@" 2>&1 | tee -a "$results/$task.log"
}

# --- pre-training on PubMed --------------------------------------------------------------

# The phase's shards as `python -m bert.data.prepare all --corpus pubmed` names them under
# PUBMED_DIR (default data/pubmed): input_dir (DATADIR overrides) and eval_dir
# (EVAL_DIR overrides), with seq_length and predictions. Needs set_casing first.
set_pubmed_phase() {
  case "$1" in
    1) seq_length=128 predictions=20 ;;
    2) seq_length=512 predictions=80 ;;
    *) echo "PHASE must be 1 or 2, not '$1'" >&2; exit 2 ;;
  esac
  local shards=${PUBMED_DIR:-data/pubmed}/hdf5_lower_case_${lower_case}_seq_len_${seq_length}
  shards+=_max_pred_${predictions}_masked_lm_prob_0.15_random_seed_12345_dupe_factor_5
  input_dir=${DATADIR:-$shards/training}
  eval_dir=${EVAL_DIR:-$shards/eval}
}

# pretrain_pubmed PHASE INIT_CHECKPOINT TRAIN_BATCH_SIZE LEARNING_RATE CASED PRECISION \
#   USE_XLA NUM_GPU WARMUP_STEPS TRAIN_STEPS NUM_ACCUMULATION_STEPS SAVE_CHECKPOINT_STEPS \
#   EVAL_BATCH_SIZE
# One phase of BERT-base pre-training with LAMB on one node, into RESULTS_DIR (default
# results/biobert_pretraining, shared by both phases); an empty INIT_CHECKPOINT in phase 2
# continues from phase 1's last checkpoint there. Evaluates on the eval shards when
# there are any. The vocabulary is Google's of that casing (VOCAB_FILE overrides).
pretrain_pubmed() {
  local phase=$1 init=$2 batch=$3 rate=$4 cased=$5 precision_arg=$6 use_xla=$7 gpus=$8
  local warmup=$9 steps=${10} accumulation=${11} save_steps=${12} eval_batch=${13}
  local results=${RESULTS_DIR:-results/biobert_pretraining}
  set_casing "$cased"
  set_biobert_dir base
  set_pubmed_phase "$phase"
  VOCAB_FILE=${VOCAB_FILE:-$bert_dir/vocab.txt}
  set_global_lr "$rate" "$gpus"
  set_pretraining_args lamb "$precision_arg" "$save_steps" "$eval_batch" "$use_xla" base \
    "$results"
  local args=(--input_dir "$input_dir" --max_seq_length "$seq_length"
    --max_predictions_per_seq "$predictions" --train_batch_size "$batch"
    --gradient_accumulation_steps "$accumulation" --learning_rate "$global_lr"
    --warmup_steps "$warmup" --max_steps "$steps")
  if [[ "$phase" == 2 ]]; then
    args+=(--phase2)
  fi
  if [[ -n "$init" ]]; then
    args+=(--init_checkpoint "$init")
  fi
  if [[ -d "$eval_dir" ]]; then
    args+=(--eval_dir "$eval_dir")
  fi
  launch_pretraining "$gpus" "$results/phase$phase.log" "${args[@]}"
}

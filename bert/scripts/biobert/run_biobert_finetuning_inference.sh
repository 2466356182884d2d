#!/usr/bin/env bash
# Score a fine-tuned BioBERT model on its task's dev set and tag or label the test set,
# in one process (one GPU, as the reference). The arguments are the reference's, in its
# order and with its defaults:
#
#   bert/scripts/biobert/run_biobert_finetuning_inference.sh <task> <init_checkpoint> \
#     <bert_model> <cased> <precision> <use_xla> <batch_size> [more flags...]
#
# defaults: ner_bc5cdr-chem results/biobert_<task> base false fp16 true 16
#   task             ner_bc5cdr-chem, ner_bc5cdr-disease (bert.run_ner, 128 tokens) or
#                    rel_chemprot (bert.run_re, 512 tokens)
#   init_checkpoint  the fine-tuned model: RESULTS_DIR of ner_bc5cdr-*.sh / rel_chemprot.sh
#   bert_model       base or large: picks BERT_DIR when the model lacks vocab.txt
#   cased            true: --no-do_lower_case; false: lower-cased
#   precision        fp16, fp32, tf32 or bf16 (amp: fp16)
#   use_xla          true: torch.compile (PyTorch's counterpart of XLA); false: eager
#   batch_size       dev and test batch size
# Environment: BIOBERT_DATA, DATASET_DIR and BERT_DIR as for ner_bc5cdr-disease.sh;
# RESULTS_DIR (default results/biobert_<task>_inference: the scores, the predictions
# and the log).
set -euo pipefail
cd "$(dirname "$0")/../../.."
# shellcheck source=SCRIPTDIR/common.sh
source bert/scripts/biobert/common.sh

task=${1:-ner_bc5cdr-chem}
set_task "$task"
init_checkpoint=${2:-results/biobert_$task}
bert_model=${3:-base}
set_casing "${4:-false}"
set_precision "${5:-fp16}"
use_xla=${6:-true}
batch_size=${7:-16}
shift $(($# < 7 ? $# : 7))

set_biobert_dir "$bert_model"
set_model_args "$init_checkpoint" "$use_xla"
results=${RESULTS_DIR:-results/biobert_${task}_inference}
mkdir -p "$results"

python -m "$module" --data_dir "$data_dir" --bert_model "$bert_model" "${model_args[@]}" \
  "$case_flag" --do_eval --do_predict --eval_batch_size "$batch_size" \
  --precision "$precision" --max_seq_length "$seq_length" --output_dir "$results" "$@" 2>&1 |
  tee -a "$results/$task.log"

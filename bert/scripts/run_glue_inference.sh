#!/usr/bin/env bash
# Evaluate a fine-tuned GLUE model on the dev set(s) and label the test set(s), one GPU:
#
#   bert/scripts/run_glue_inference.sh <task_name> <init_checkpoint> <batch_size_per_gpu> \
#     <precision> <use_xla> <seq_length> <doc_stride> <bert_model> [more flags...]
#
# defaults: MRPC results/glue_MRPC_fp16_8gpu 8 fp16 true 128 64 large
#   init_checkpoint  the output directory of run_glue.sh (or NVIDIA's .pt file with its
#                    config from BERT_DIR)
#   precision        fp16, fp32, tf32 or bf16 (amp: fp16)
#   use_xla          true: torch.compile (static shapes); false: eager
#   doc_stride       accepted for the reference's argument order; GLUE does not use it
# Writes eval_results.json and the test predictions (GLUE submission format, e.g.
# MRPC.tsv) to RESULTS_DIR (default results/glue_inference_<task_name>_<precision>).
# Environment: BERT_DIR, GLUE_DIR, RESULTS_DIR as for run_glue.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/common.sh
source bert/scripts/common.sh

task_name=${1:-MRPC}
init_checkpoint=${2:-results/glue_${task_name}_fp16_8gpu}
batch_size=${3:-8}
set_precision "${4:-fp16}"
use_xla=${5:-true}
seq_length=${6:-128}
# ${7} is doc_stride: no meaning for sentence classification.
bert_model=${8:-large}
shift $(($# < 8 ? $# : 8))

set_bert_dir "$bert_model"
set_model_args "$init_checkpoint" "$use_xla"
results=${RESULTS_DIR:-results/glue_inference_${task_name}_${precision}}
mkdir -p "$results"

python -m bert.run_glue --task_name "$task_name" \
  --data_dir "${GLUE_DIR:-data/download/$task_name}" --bert_model "$bert_model" \
  "${model_args[@]}" --do_eval --do_predict --eval_batch_size "$batch_size" \
  --precision "$precision" --max_seq_length "$seq_length" --output_dir "$results" "$@" 2>&1 |
  tee -a "$results/run_glue_inference.log"

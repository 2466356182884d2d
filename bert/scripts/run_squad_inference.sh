#!/usr/bin/env bash
# Predict and score the SQuAD dev set with a fine-tuned checkpoint on one GPU:
#
#   bert/scripts/run_squad_inference.sh <init_checkpoint> <batch_size> <precision> \
#     <use_xla> <seq_length> <doc_stride> <bert_model> <squad_version> [more flags...]
#
# defaults: results/squad_v1.1_fp16_8gpu 8 fp16 true 384 128 large 1.1
#   init_checkpoint  the output directory of run_squad.sh (or any SQuAD model directory,
#                    or NVIDIA's .pt file with its config from BERT_DIR)
#   precision        fp16, fp32, tf32 or bf16 (amp: fp16)
#   use_xla          true: torch.compile (static shapes); false: eager
# Writes predictions.json, nbest_predictions.json (and null_odds.json for v2.0) to
# RESULTS_DIR (default results/squad_inference_v<version>_<precision>) and prints the
# inference throughput and {"exact_match": ..., "f1": ...}.
# Environment: BERT_DIR, SQUAD_DIR, RESULTS_DIR as for run_squad.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/common.sh
source bert/scripts/common.sh

init_checkpoint=${1:-results/squad_v1.1_fp16_8gpu}
batch_size=${2:-8}
set_precision "${3:-fp16}"
use_xla=${4:-true}
seq_length=${5:-384}
doc_stride=${6:-128}
bert_model=${7:-large}
squad_version=${8:-1.1}
shift $(($# < 8 ? $# : 8))

set_bert_dir "$bert_model"
set_model_args "$init_checkpoint" "$use_xla"
squad_dir=${SQUAD_DIR:-data/download/squad/v$squad_version}
results=${RESULTS_DIR:-results/squad_inference_v${squad_version}_${precision}}
squad_args=(--predict_file "$squad_dir/dev-v$squad_version.json")
[[ "$squad_version" == "2.0" ]] && squad_args+=(--version_2_with_negative)
mkdir -p "$results"

python -m bert.run_squad --bert_model "$bert_model" "${model_args[@]}" "${squad_args[@]}" \
  --do_predict --do_eval --predict_batch_size "$batch_size" --precision "$precision" \
  --max_seq_length "$seq_length" --doc_stride "$doc_stride" \
  --output_dir "$results" "$@" 2>&1 | tee -a "$results/run_squad_inference.log"

#!/usr/bin/env bash
# Fine-tune BERT on a GLUE task and evaluate it on the dev set, on one node (torchrun):
#
#   bert/scripts/run_glue.sh <task_name> <batch_size_per_gpu> <learning_rate_per_gpu> \
#     <precision> <use_xla> <num_gpus> <seq_length> <doc_stride> <bert_model> <epochs> \
#     <warmup_proportion> <checkpoint> [more bert.run_glue flags...]
#
# defaults: MRPC 16 3e-6 fp16 true 8 128 64 large 3 0.1 BERT_DIR
#   task_name       CoLA, MRPC, MNLI or SST-2
#   precision       fp16, fp32, tf32 or bf16 (amp: fp16)
#   use_xla         true: torch.compile (static shapes); false: eager
#   learning_rate   per GPU: the run uses learning_rate_per_gpu x num_gpus
#   doc_stride      accepted for the reference's argument order; GLUE does not use it
#   bert_model      large or base: picks BERT_DIR (vocab.txt, bert_config.json)
#   checkpoint      a model directory (Hugging Face format) or a .pt file (NVIDIA's)
# Environment: BERT_DIR, GLUE_DIR (default data/download/<task_name>), RESULTS_DIR
# (default results/glue_<task_name>_<precision>_<num_gpus>gpu). Started again after an
# interruption (SIGTERM), the run continues from RESULTS_DIR/checkpoints.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/common.sh
source bert/scripts/common.sh

task_name=${1:-MRPC}
batch_size=${2:-16}
learning_rate=${3:-3e-6}
set_precision "${4:-fp16}"
use_xla=${5:-true}
num_gpus=${6:-8}
seq_length=${7:-128}
# ${8} is doc_stride: no meaning for sentence classification.
bert_model=${9:-large}
epochs=${10:-3}
warmup_proportion=${11:-0.1}
set_bert_dir "$bert_model"
checkpoint=${12:-$bert_dir}
shift $(($# < 12 ? $# : 12))

set_model_args "$checkpoint" "$use_xla"
set_global_lr "$learning_rate" "$num_gpus"
results=${RESULTS_DIR:-results/glue_${task_name}_${precision}_${num_gpus}gpu}
mkdir -p "$results"

python -m torch.distributed.run --standalone --nproc_per_node "$num_gpus" -m bert.run_glue \
  --task_name "$task_name" --data_dir "${GLUE_DIR:-data/download/$task_name}" \
  --bert_model "$bert_model" "${model_args[@]}" --do_train --do_eval --resume \
  --train_batch_size "$batch_size" --learning_rate "$global_lr" --precision "$precision" \
  --max_seq_length "$seq_length" --num_train_epochs "$epochs" \
  --warmup_proportion "$warmup_proportion" --output_dir "$results" "$@" 2>&1 |
  tee -a "$results/run_glue.log"

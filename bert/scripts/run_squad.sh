#!/usr/bin/env bash
# Fine-tune BERT on SQuAD, then predict and score the dev set, on one node (torchrun):
#
#   bert/scripts/run_squad.sh <batch_size_per_gpu> <learning_rate_per_gpu> <precision> \
#     <use_xla> <num_gpus> <seq_length> <doc_stride> <bert_model> <squad_version> \
#     <checkpoint> <epochs> [more bert.run_squad flags...]
#
# defaults: 32 5e-6 fp16 true 8 384 128 large 1.1 BERT_DIR 2.0
#   precision       fp16, fp32, tf32 or bf16 (amp: fp16)
#   use_xla         true: torch.compile (PyTorch's counterpart of TensorFlow's XLA) with
#                   static shapes; false: eager
#   learning_rate   per GPU: the run uses learning_rate_per_gpu x num_gpus
#   bert_model      large or base: picks BERT_DIR (vocab.txt, bert_config.json)
#   checkpoint      a model directory (Hugging Face format, or a run's output) or a .pt
#                   file (NVIDIA's; its config comes from BERT_DIR)
# Environment: BERT_DIR (default: Google's released weights under data/download),
# SQUAD_DIR (default data/download/squad/v<version>), RESULTS_DIR (default
# results/squad_v<version>_<precision>_<num_gpus>gpu). Started again after an
# interruption (SIGTERM), the run continues from RESULTS_DIR/checkpoints.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/common.sh
source bert/scripts/common.sh

batch_size=${1:-32}
learning_rate=${2:-5e-6}
set_precision "${3:-fp16}"
use_xla=${4:-true}
num_gpus=${5:-8}
seq_length=${6:-384}
doc_stride=${7:-128}
bert_model=${8:-large}
squad_version=${9:-1.1}
set_bert_dir "$bert_model"
checkpoint=${10:-$bert_dir}
epochs=${11:-2.0}
shift $(($# < 11 ? $# : 11))

set_model_args "$checkpoint" "$use_xla"
set_global_lr "$learning_rate" "$num_gpus"
squad_dir=${SQUAD_DIR:-data/download/squad/v$squad_version}
results=${RESULTS_DIR:-results/squad_v${squad_version}_${precision}_${num_gpus}gpu}
squad_args=(--train_file "$squad_dir/train-v$squad_version.json"
            --predict_file "$squad_dir/dev-v$squad_version.json")
[[ "$squad_version" == "2.0" ]] && squad_args+=(--version_2_with_negative)
mkdir -p "$results"

python -m torch.distributed.run --standalone --nproc_per_node "$num_gpus" -m bert.run_squad \
  --bert_model "$bert_model" "${model_args[@]}" "${squad_args[@]}" \
  --do_train --do_predict --do_eval --resume \
  --train_batch_size "$batch_size" --learning_rate "$global_lr" --precision "$precision" \
  --max_seq_length "$seq_length" --doc_stride "$doc_stride" --num_train_epochs "$epochs" \
  --output_dir "$results" "$@" 2>&1 | tee -a "$results/run_squad.log"

#!/usr/bin/env bash
# BioBERT on BC5CDR-disease (named-entity recognition, BLUE's files): fine-tune on one
# node (torchrun, one process per GPU), then score the dev and test sets. The arguments
# are those of NVIDIA's BioBERT recipe, in its order and with its defaults:
#
#   bert/scripts/biobert/ner_bc5cdr-disease.sh <init_checkpoint> <train_batch_size> \
#     <learning_rate> <cased> <precision> <use_xla> <num_gpu> <seq_length> <bert_model> \
#     <eval_batch_size> <epochs> [more bert.run_ner flags...]
#
# defaults: results/biobert_pretraining/pretrained 8 3.125e-6 false fp16 true 16 128 base 8 100.0
#   init_checkpoint   a model directory (Hugging Face format: run_pretraining's pretrained/,
#                     a downloaded BioBERT) or a .pt file with BERT_DIR/bert_config.json
#   train_batch_size  per GPU
#   learning_rate     per GPU: the run uses learning_rate x num_gpu (5e-5 by default)
#   cased             true: --no-do_lower_case and cased weights; false: lower-cased
#   precision         fp16, fp32, tf32 or bf16 (amp: fp16)
#   use_xla           XLA is TensorFlow's compiler; true: torch.compile, false: eager
#   bert_model        base or large: picks BERT_DIR when the checkpoint lacks vocab.txt
#   eval_batch_size   for the dev and test sets (the reference's predict batch too)
# Environment: BIOBERT_DATA (default data/biobert, as `python -m bert.biobert_download`
# fills it) or DATASET_DIR (the task folder itself), BERT_DIR (default
# data/bert/weights/bert-<bert_model>-<cased|uncased>), RESULTS_DIR (default
# results/biobert_ner_bc5cdr-disease: the model, eval_results.json, test_results.json,
# test_predictions.txt, the log). Started again after an interruption, the run continues
# from RESULTS_DIR/checkpoints.
set -euo pipefail
cd "$(dirname "$0")/../../.."
# shellcheck source=SCRIPTDIR/common.sh
source bert/scripts/biobert/common.sh

finetune_biobert ner_bc5cdr-disease "${1:-results/biobert_pretraining/pretrained}" "${2:-8}" \
  "${3:-3.125e-6}" "${4:-false}" "${5:-fp16}" "${6:-true}" "${7:-16}" "${8:-128}" "${9:-base}" \
  "${10:-8}" "${11:-100.0}" "${@:12}"

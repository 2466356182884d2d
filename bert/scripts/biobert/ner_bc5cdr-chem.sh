#!/usr/bin/env bash
# BioBERT on BC5CDR-chemical (named-entity recognition, BLUE's files): fine-tune on one
# node (torchrun, one process per GPU), then score the dev and test sets. The arguments,
# their meaning and the environment are those of ner_bc5cdr-disease.sh (the reference's,
# in its order); only the task folder and the default number of epochs differ:
#
#   bert/scripts/biobert/ner_bc5cdr-chem.sh <init_checkpoint> <train_batch_size> \
#     <learning_rate> <cased> <precision> <use_xla> <num_gpu> <seq_length> <bert_model> \
#     <eval_batch_size> <epochs> [more bert.run_ner flags...]
#
# defaults: results/biobert_pretraining/pretrained 8 3.125e-6 false fp16 true 16 128 base 8 10.0
# Data: BIOBERT_DATA/BC5CDR/chem (or DATASET_DIR); results: RESULTS_DIR (default
# results/biobert_ner_bc5cdr-chem).
set -euo pipefail
cd "$(dirname "$0")/../../.."
# shellcheck source=SCRIPTDIR/common.sh
source bert/scripts/biobert/common.sh

finetune_biobert ner_bc5cdr-chem "${1:-results/biobert_pretraining/pretrained}" "${2:-8}" \
  "${3:-3.125e-6}" "${4:-false}" "${5:-fp16}" "${6:-true}" "${7:-16}" "${8:-128}" "${9:-base}" \
  "${10:-8}" "${11:-10.0}" "${@:12}"

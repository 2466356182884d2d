#!/usr/bin/env bash
# BioBERT on ChemProt (chemical-protein relation extraction, BLUE's files): fine-tune
# bert.run_re on one node (torchrun, one process per GPU), then score the dev set and
# label (and, when labelled, score) the test set. The arguments are the reference's, in
# its order; their meaning and the environment are those of ner_bc5cdr-disease.sh:
#
#   bert/scripts/biobert/rel_chemprot.sh <init_checkpoint> <train_batch_size> \
#     <learning_rate> <cased> <precision> <use_xla> <num_gpu> <seq_length> <bert_model> \
#     <eval_batch_size> <epochs> [more bert.run_re flags...]
#
# defaults: results/biobert_pretraining/pretrained 8 1.5e-6 false fp16 true 16 512 base 16 3.0
# (global batch 128, learning rate 1.5e-6 x 16 = 2.4e-5). Data: BIOBERT_DATA/chemprot (or
# DATASET_DIR): train.tsv, dev.tsv, test.tsv; results: RESULTS_DIR (default
# results/biobert_rel_chemprot: eval_results.json with the micro F1 over the five CPR
# classes, test_predictions.tsv, the model, the log).
set -euo pipefail
cd "$(dirname "$0")/../../.."
# shellcheck source=SCRIPTDIR/common.sh
source bert/scripts/biobert/common.sh

finetune_biobert rel_chemprot "${1:-results/biobert_pretraining/pretrained}" "${2:-8}" \
  "${3:-1.5e-6}" "${4:-false}" "${5:-fp16}" "${6:-true}" "${7:-16}" "${8:-512}" "${9:-base}" \
  "${10:-16}" "${11:-3.0}" "${@:12}"

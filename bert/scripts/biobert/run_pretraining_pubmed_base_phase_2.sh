#!/usr/bin/env bash
# BioBERT pre-training, phase 2: BERT-base on PubMed abstracts with sequences of 512
# tokens (80 predictions each), LAMB, on one node (torchrun, one process per GPU),
# starting from phase 1's last checkpoint. The arguments are the reference's, in its
# order and with its defaults:
#
#   bert/scripts/biobert/run_pretraining_pubmed_base_phase_2.sh <init_checkpoint> \
#     <train_batch_size> <learning_rate> <cased> <precision> <use_xla> <num_gpus> \
#     <warmup_steps> <train_steps> <num_accumulation_steps> <save_checkpoint_steps> \
#     <eval_batch_size>
#
# defaults: "" 16 2.9e-4 false fp16 true 16 434 4340 128 5000 26
#   init_checkpoint   the phase 1 checkpoint (ckpt_*.pt or a model directory); empty:
#                     phase 1's last checkpoint in RESULTS_DIR
#   train_batch_size  per GPU and micro-step: global batch 16 x 128 x 16 = 32,768
#   learning_rate     per GPU: the run uses learning_rate x num_gpus (4.64e-3)
# and the others as for run_pretraining_pubmed_base_phase_1.sh, whose environment this
# script reads too (PUBMED_DIR, DATADIR, EVAL_DIR, BERT_DIR, VOCAB_FILE, BERT_CONFIG,
# SEED, RESULTS_DIR, EXTRA_ARGS; the shards: --max-seq-length 512 --max-predictions 80).
# The final model is written to RESULTS_DIR/pretrained, where the fine-tuning scripts
# look for it; a rerun continues where the last one stopped.
set -euo pipefail
cd "$(dirname "$0")/../../.."
# shellcheck source=SCRIPTDIR/common.sh
source bert/scripts/biobert/common.sh

pretrain_pubmed 2 "${1:-}" "${2:-16}" "${3:-2.9e-4}" "${4:-false}" "${5:-fp16}" "${6:-true}" \
  "${7:-16}" "${8:-434}" "${9:-4340}" "${10:-128}" "${11:-5000}" "${12:-26}"

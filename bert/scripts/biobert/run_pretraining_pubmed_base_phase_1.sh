#!/usr/bin/env bash
# BioBERT pre-training, phase 1: BERT-base, from Google's BERT-base weights, on PubMed
# abstracts with sequences of 128 tokens (20 predictions each), LAMB, on one node
# (torchrun, one process per GPU). Phase 2 (run_pretraining_pubmed_base_phase_2.sh)
# continues from its last checkpoint. The arguments are the reference's, in its order
# and with its defaults:
#
#   bert/scripts/biobert/run_pretraining_pubmed_base_phase_1.sh <train_batch_size> \
#     <learning_rate> <cased> <precision> <use_xla> <num_gpus> <warmup_steps> \
#     <train_steps> <num_accumulation_steps> <save_checkpoint_steps> <eval_batch_size>
#
# defaults: 128 9.625e-5 false fp16 true 16 1953 19531 32 5000 80
#   train_batch_size  per GPU and micro-step: global batch 128 x 32 x 16 = 65,536
#   learning_rate     per GPU: the run uses learning_rate x num_gpus (1.54e-3)
#   cased             false: the uncased vocabulary and lower_case_1 shards; true: cased
#   precision         fp16, fp32, tf32 or bf16 (amp: fp16)
#   use_xla           XLA is TensorFlow's compiler; true: torch.compile, false: eager
#   eval_batch_size   per GPU, for the held-out shards at the end (when there are any)
#
# Data: the HDF5 shards of `python -m bert.data.prepare all --corpus pubmed --data-dir
# data/pubmed --vocab-file VOCAB --max-seq-length 128 --max-predictions 20
# --eval-fraction 0.1` (add --no-do-lower-case for cased) under PUBMED_DIR (default
# data/pubmed); DATADIR / EVAL_DIR name the training / held-out shard folders
# themselves. Environment: BERT_DIR (Google's weights, default
# data/bert/weights/bert-base-<cased|uncased> from `python -m bert.download weights`),
# INIT_CHECKPOINT (the weights phase 1 starts from; default BERT_DIR, empty: none), VOCAB_FILE
# (default BERT_DIR/vocab.txt), BERT_CONFIG, SEED, RESULTS_DIR (default
# results/biobert_pretraining, shared with phase 2: checkpoints, pretrained/, phase1.log),
# EXTRA_ARGS (more run_pretraining.py flags). A rerun continues where the last one stopped.
set -euo pipefail
cd "$(dirname "$0")/../../.."
# shellcheck source=SCRIPTDIR/common.sh
source bert/scripts/biobert/common.sh

set_casing "${3:-false}"
set_biobert_dir base
pretrain_pubmed 1 "${INIT_CHECKPOINT-$bert_dir}" "${1:-128}" "${2:-9.625e-5}" "${3:-false}" \
  "${4:-fp16}" "${5:-true}" "${6:-16}" "${7:-1953}" "${8:-19531}" "${9:-32}" "${10:-5000}" \
  "${11:-80}"

#!/usr/bin/env bash
# BERT pre-training data from English Wikipedia (plus BookCorpus with --bookcorpus DIR):
# download, text extraction, sentence segmentation, sharding, then the HDF5 instance
# shards of phase 1 and phase 2 in NVIDIA's folder names (see bert/data/prepare.py).
# Safe to rerun: finished stages are skipped, an interrupted run continues where it
# stopped, and phase 2 reuses the text stages of phase 1.
#
#   bert/scripts/create_datasets.sh [DATA_DIR] [VOCAB] [P1_LEN P1_PRED [P2_LEN P2_PRED]] \
#       [-- extra bert.data.prepare flags...]
#
#   DATA_DIR         default: data/bert
#   VOCAB            default: DATA_DIR/weights/bert-large-uncased/vocab.txt
#                    (what bert/scripts/download.sh DATA_DIR weights fetches)
#   P1_LEN P1_PRED   phase 1: tokens per instance, masked predictions (default 128 20)
#   P2_LEN P2_PRED   phase 2 (default 512 80)
#   flags after "--" go to both phases, e.g.
#     -- --bookcorpus data/bookcorpus --dump enwiki-latest-pages-articles.xml.bz2 --workers 16
#
# Training reads DATA_DIR/hdf5_lower_case_1_seq_len_128_max_pred_20_masked_lm_prob_0.15_
# random_seed_12345_dupe_factor_5/training (phase 1) and the seq_len_512 folder (phase 2).
set -euo pipefail

positional=()
while [[ $# -gt 0 && "$1" != "--" && ${#positional[@]} -lt 6 ]]; do
  positional+=("$1")
  shift
done
[[ $# -gt 0 && "$1" == "--" ]] && shift
data_dir=${positional[0]:-data/bert}
vocab=${positional[1]:-$data_dir/weights/bert-large-uncased/vocab.txt}
p1_len=${positional[2]:-128}
p1_pred=${positional[3]:-20}
p2_len=${positional[4]:-512}
p2_pred=${positional[5]:-80}

# Run from anywhere: DATA_DIR and VOCAB stay relative to the caller's folder.
repo=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

phase() {  # NAME SEQ_LEN PREDICTIONS EXTRA_FLAGS...
  local name=$1 seq_len=$2 predictions=$3
  shift 3
  echo "== ${name}: max_seq_length ${seq_len}, max_predictions_per_seq ${predictions}"
  python -m bert.data.prepare all --data-dir "$data_dir" --vocab-file "$vocab" \
    --max-seq-length "$seq_len" --max-predictions "$predictions" "$@"
}

phase "phase 1" "$p1_len" "$p1_pred" "$@"
phase "phase 2" "$p2_len" "$p2_pred" "$@"

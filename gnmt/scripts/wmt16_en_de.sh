#!/usr/bin/env bash
# Download WMT16 English-German from statmt.org and prepare it for GNMT: raw text,
# Moses tokenization, cleaning, joint BPE and the vocabulary (see gnmt/wmt16.py).
# Safe to rerun: finished steps are skipped and an interrupted run continues.
#
#   gnmt/scripts/wmt16_en_de.sh [DATA_DIR] [MERGES] [extra gnmt.wmt16 flags...]
#
#   DATA_DIR  default: $DATASET_DIR, else data/wmt16_de_en (what train.sh reads)
#   MERGES    BPE merge operations (default 32000)
#   e.g. --base-url URL (a mirror with statmt.org's paths), --workers N
set -euo pipefail
cd "$(dirname "$0")/../.."

data_dir=${1:-${DATASET_DIR:-data/wmt16_de_en}}
merges=${2:-32000}
shift $(( $# < 2 ? $# : 2 ))

exec python -m gnmt.wmt16 --data-dir "$data_dir" --merges "$merges" "$@"

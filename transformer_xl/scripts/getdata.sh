#!/usr/bin/env bash
# Download and prepare the Transformer-XL datasets (see transformer_xl/getdata.py).
# Safe to rerun: finished datasets are skipped without a request, and an interrupted
# run continues where it stopped.
#
#   transformer_xl/scripts/getdata.sh [DATA_DIR] [DATASETS...] [-- extra getdata flags...]
#
#   DATA_DIR  default: data (train.py's --data is then data/wikitext-103, data/enwik8, ...)
#   DATASETS  any of wt103 enwik8 text8 lm1b (default: all four)
#   e.g. -- --base-url-override wt103=http://mirror/wikitext --retries 10
set -euo pipefail

data_dir=data
if [[ $# -gt 0 && "$1" != "--" ]]; then
  data_dir=$1
  shift
fi
datasets=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
  datasets+=("$1")
  shift
done
[[ $# -gt 0 ]] && shift  # the "--"
[[ ${#datasets[@]} -gt 0 ]] || datasets=(wt103 enwik8 text8 lm1b)

# Run from anywhere: DATA_DIR stays relative to the caller's folder.
repo=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec python -m transformer_xl.getdata --data-dir "$data_dir" --datasets "${datasets[@]}" "$@"

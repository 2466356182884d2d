#!/usr/bin/env bash
# Download SQuAD v1.1/v2.0, the GLUE tasks (CoLA, MRPC, MNLI, SST-2) and pretrained BERT
# weights (see bert/download.py). Safe to rerun: what is in place is verified without a
# request, and an interrupted run continues where it stopped.
#
#   bert/scripts/download.sh [DATA_DIR] [WHAT...] [-- extra bert.download flags...]
#
#   DATA_DIR  default: data/bert
#   WHAT      any of squad glue weights (default: all three)
#   e.g. bert/scripts/download.sh data/bert weights -- --models bert-large-uncased
#        bert/scripts/download.sh data/bert glue -- --base-url-override glue=http://mirror/glue
set -euo pipefail

data_dir=data/bert
if [[ $# -gt 0 && "$1" != "--" ]]; then
  data_dir=$1
  shift
fi
what=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
  what+=("$1")
  shift
done
[[ $# -gt 0 ]] && shift  # the "--"
[[ ${#what[@]} -gt 0 ]] || what=(squad glue weights)

# Run from anywhere: DATA_DIR stays relative to the caller's folder.
repo=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec python -m bert.download --data-dir "$data_dir" "${what[@]}" "$@"

#!/usr/bin/env bash
# Start a shell in the image with data and results mounted:
#   docker/interactive.sh [DATA_DIR] [RESULTS_DIR] [TAG]
set -euo pipefail
data=$(realpath "${1:-$PWD/data}")
results=$(realpath "${2:-$PWD/results}")
tag=${3:-lm-recipes:latest}
mkdir -p "$results"
docker run -it --rm --gpus all --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 \
  -v "$data":/data -v "$results":/results "$tag" bash

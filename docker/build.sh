#!/usr/bin/env bash
# Build the image: docker/build.sh [TAG]   (FROM_IMAGE_NAME overrides the NGC base)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-lm-recipes:latest}
args=()
[[ -n "${FROM_IMAGE_NAME:-}" ]] && args=(--build-arg "FROM_IMAGE_NAME=$FROM_IMAGE_NAME")
docker build "${args[@]}" -t "$tag" .

#!/usr/bin/env bash
# Wheels for a GPU machine without network access whose image already holds torch and
# the common scientific stack (numpy, h5py, tokenizers, sacrebleu, matplotlib, ...): the
# runtime dependencies such images usually lack, without their dependencies.
#
#   scripts/offline_wheels.sh DIR [PYTHON_VERSION]        # e.g. .whl 3.12
#   # on the GPU machine, from the repository root:
#   python3 -m pip install --no-index --no-deps --target /tmp/site DIR/*.whl
#   export PYTHONPATH=/tmp/site; make gpu-check GPU_CHECK_OUT=/some/where
set -euo pipefail
dir=${1:?usage: scripts/offline_wheels.sh DIR [PYTHON_VERSION]}
version=${2:-3.12}
packages=(sacremoses subword-nmt mock nltk defusedxml mwparserfromhell)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$p")
done
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version "$version" --implementation cp "${platforms[@]}" -d "$dir" "${packages[@]}"
ls "$dir"

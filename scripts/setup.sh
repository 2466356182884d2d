#!/usr/bin/env bash
# Install what the project needs into the current Python environment.
#
#   scripts/setup.sh            runtime dependencies (requirements.txt)
#   scripts/setup.sh test       plus the test tools (requirements-test.txt)
#
# torch: an installed torch (the NGC container's, with its CUDA and apex) is always
# kept. Without one, a machine with an NVIDIA driver gets the default CUDA build; a
# machine without one must get a CPU build, and this script refuses to go on if pip
# would fetch a CUDA build there (several GB). Point pip at a CPU build with
# TORCH_INDEX_URL (a PyTorch CPU wheel index) or a local wheel folder (PIP_FIND_LINKS).
set -euo pipefail

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
what=${1:-runtime}
cd "$(dirname "$0")/.."

pip_install() { "$PYTHON" -m pip install --disable-pip-version-check --quiet "$@"; }

if "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "setup: keeping installed torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
  # torch.nn.utils.get_total_norm, torch.get_autocast_dtype, ...: torch 2.6 and newer.
  if ! "$PYTHON" -c 'import sys, torch; v = torch.__version__.split("+")[0].split(".")
sys.exit(tuple(map(int, v[:2])) < (2, 6))'; then
    echo "setup: the recipes need torch 2.6 or newer" >&2
    exit 1
  fi
else
  index=()
  [[ -n "${TORCH_INDEX_URL:-}" ]] && index=(--index-url "$TORCH_INDEX_URL")
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA driver found, installing torch==$TORCH_VERSION (CUDA build)"
  else
    report=$(mktemp)
    trap 'rm -f "$report"' EXIT
    "$PYTHON" -m pip install --dry-run --ignore-installed --no-deps --quiet \
      --report "$report" "${index[@]}" "torch==$TORCH_VERSION" 2>/dev/null
    chosen=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["install"][0]["metadata"]["version"])' "$report")
    if [[ "$chosen" != *+cpu ]]; then
      echo "setup: no GPU here, but pip would install torch $chosen, a CUDA build of" \
        "several GB. Set TORCH_INDEX_URL to a PyTorch CPU wheel index (or PIP_FIND_LINKS" \
        "to a folder holding a +cpu wheel) and run again." >&2
      exit 1
    fi
    echo "setup: no GPU, installing torch $chosen (CPU build)"
  fi
  pip_install "${index[@]}" "torch==$TORCH_VERSION"
fi

case "$what" in
  runtime) pip_install -r requirements.txt ;;
  test) pip_install -r requirements-test.txt ;;
  *) echo "usage: $0 [runtime|test]" >&2; exit 2 ;;
esac
echo "setup: done ($what)"

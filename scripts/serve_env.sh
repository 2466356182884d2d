#!/usr/bin/env bash
# The serving environment: .venv-serve with PyTriton (tritonserver 2.51) and tritonclient,
# which need numpy<2 and protobuf<5; it reuses the main environment's packages (torch,
# tokenizers, onnxruntime) through --system-site-packages. Idempotent: an environment
# that already imports tritonclient and pytriton is kept. Used by `make test`; without it
# the serving tests skip and say why.
#   scripts/serve_env.sh           create or update .venv-serve
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
venv=.venv-serve
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import pytriton, tritonclient.http" 2>/dev/null; then
  echo "serving environment $venv is ready"
  exit 0
fi
"$PYTHON" -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-triton.txt
"$venv/bin/python" -c "import pytriton, tritonclient.http, numpy; print('serving environment', '$venv', 'ready: numpy', numpy.__version__)"

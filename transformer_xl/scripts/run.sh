#!/usr/bin/env bash
# Train or evaluate Transformer-XL with a recipe from transformer_xl/configs on one node.
#
#   transformer_xl/scripts/run.sh RECIPE train <#GPUs> [--config NAME] [train.py flags...]
#   transformer_xl/scripts/run.sh RECIPE eval  <#GPUs> [--config NAME] [--model CKPT] [eval.py flags...]
#
# RECIPE is a file name in transformer_xl/configs without .yaml (wt103_base, wt103_large,
# enwik8_base, text8_base, lm1b_base). --config picks a machine set-up from that file
# (for example dgxa100_8gpu_fp16 or trainbench); later flags override it.
# Environment: WORK_DIR (default LM-TFM), DATA (default: the recipe's data folder).
# Training resumes from WORK_DIR's last checkpoint when there is one, unless the flags
# ask for a fresh start (--overwrite) or another checkpoint (--restart).
set -euo pipefail
cd "$(dirname "$0")/../.."

usage="usage: $0 RECIPE train|eval <#GPUs> [flags...]"
recipe=${1:?$usage}
mode=${2:?$usage}
gpus=${3:?$usage}
shift 3
config_file=transformer_xl/configs/${recipe}.yaml
[[ -f "$config_file" ]] || { echo "no recipe $config_file" >&2; exit 2; }

case "$mode" in
  train) module=transformer_xl.train; extra=(--resume)
    # a fresh start (--overwrite) or another checkpoint (--restart) replaces the resume
    for flag in "$@"; do
      [[ "$flag" == --overwrite || "$flag" == --restart ]] && extra=()
    done ;;
  eval) module=transformer_xl.eval; extra=() ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
[[ -n "${DATA:-}" ]] && extra+=(--data "$DATA")

exec python -m torch.distributed.run --standalone --nproc_per_node "$gpus" -m "$module" \
  --config_file "$config_file" --work_dir "${WORK_DIR:-LM-TFM}" "${extra[@]}" "$@"

#!/usr/bin/env bash
# Transformer-XL recipe lm1b_base (transformer_xl/configs/lm1b_base.yaml):
#   $0 train <#GPUs> [--config NAME] [flags...]
#   $0 eval <#GPUs> [--model CHECKPOINT] [--config NAME] [flags...]
exec "$(dirname "$0")/run.sh" lm1b_base "$@"

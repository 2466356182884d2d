#!/usr/bin/env bash
# Transformer-XL recipe wt103_large (transformer_xl/configs/wt103_large.yaml):
#   $0 train <#GPUs> [--config NAME] [flags...]
#   $0 eval <#GPUs> [--model CHECKPOINT] [--config NAME] [flags...]
exec "$(dirname "$0")/run.sh" wt103_large "$@"

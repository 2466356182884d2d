#!/usr/bin/env bash
# Transformer-XL recipe enwik8_base (transformer_xl/configs/enwik8_base.yaml):
#   $0 train <#GPUs> [--config NAME] [flags...]
#   $0 eval <#GPUs> [--model CHECKPOINT] [--config NAME] [flags...]
exec "$(dirname "$0")/run.sh" enwik8_base "$@"

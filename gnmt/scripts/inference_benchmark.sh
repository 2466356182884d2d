#!/usr/bin/env bash
# Inference table: BLEU, sentences/s, tokens/s and latency percentiles over batch
# sizes x beam sizes on newstest2014.
#
#   gnmt/scripts/inference_benchmark.sh CHECKPOINT [MATH] [BATCH_SIZES] [BEAM_SIZES]
set -euo pipefail
cd "$(dirname "$0")/../.."

checkpoint=${1:?usage: $0 CHECKPOINT [MATH] [BATCH_SIZES] [BEAM_SIZES]}
math=${2:-fp16}
data=${DATASET_DIR:-data/wmt16_de_en}

exec python -m gnmt.translate --model "$checkpoint" --math "$math" \
  --input "$data/newstest2014.en" --reference "$data/newstest2014.de" \
  --output "${RESULTS:-results/gnmt}/newstest2014.${math}.trans" \
  --batch-size "${3:-1,2,4,8,32,128,512}" --beam-size "${4:-1,2,5}"

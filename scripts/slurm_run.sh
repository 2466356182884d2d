#!/usr/bin/env bash
# Inside an sbatch job: run `python -m MODULE ARGS...` once per SLURM task through srun
# (ranks come from SLURM's variables, see common/distributed.py), in a container when
# CONT is set (pyxis/enroot), on bare metal otherwise. The model run.sub files call it.
#
#   scripts/slurm_run.sh MODULE [ARGS...]
#
# Environment: CONT (container image), CONTAINER_WORKDIR (the repository inside the
# image; default /workspace/lm-recipes, as the Dockerfile builds it), MOUNTS (more pyxis
# mounts "SRC:DST,..."), SRUN_ARGS (extra srun flags). With CONT, the submit folder's
# data/ and results/ are mounted at the same relative places in the image, so paths
# under them mean the same inside and out. MASTER_ADDR / MASTER_PORT default to the
# first node and a port derived from the job id.
set -euo pipefail

module=${1:?usage: $0 MODULE [ARGS...]}
shift
first_node=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" | head -n 1)
export MASTER_ADDR=${MASTER_ADDR:-$first_node}
export MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}

srun_args=(--kill-on-bad-exit=1)
read -r -a extra_srun <<< "${SRUN_ARGS:-}"
srun_args+=("${extra_srun[@]}")
workdir=$(pwd)
if [[ -n "${CONT:-}" ]]; then
  workdir=${CONTAINER_WORKDIR:-/workspace/lm-recipes}
  mkdir -p data results
  mounts="$(pwd)/data:$workdir/data,$(pwd)/results:$workdir/results${MOUNTS:+,$MOUNTS}"
  srun_args+=(--container-image "$CONT" --container-workdir "$workdir" --container-mounts "$mounts")
fi
# shellcheck disable=SC2016  # $0 and $@ belong to the inner shell
exec srun "${srun_args[@]}" bash -c 'cd "$0" && exec python -m "$@"' "$workdir" "$module" "$@"

"""Shared test helpers: subprocess launch from the repo root, clean environments, GPU marks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_PREFIXES = ("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_")


def requires_cuda(test):
    """Marks `test` as a GPU test (`pytest -m gpu`, run by make gpu-check) that is skipped
    with the reason where no CUDA device is present."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    return pytest.mark.gpu(skip(test))


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without launcher variables, with the repo root importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_PREFIXES)}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    env.update(extra or {})
    return env


NOCPU_SITE = ROOT / "tests" / "nocpu_site"


def nocpu_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: clean_env()) with a process group that, like NCCL, has no CPU
    backend (tests/nocpu_site): a recipe's collective on a CPU tensor then fails."""
    env = dict(base if base is not None else clean_env())
    env["PYTHONPATH"] = os.pathsep.join([str(NOCPU_SITE), str(ROOT)])
    env["LM_RECIPES_DIST_BACKEND"] = "nocpu"
    return env


def run_python(args, env_extra=None, timeout=300, check=True):
    """Run `python ARGS` from the repo root; on failure show its output."""
    proc = subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        env=clean_env(env_extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc

"""The Dockerfile and every shell script pass their linters; the image installs the way
CI does."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHELL_SCRIPTS = sorted(
    p
    for pattern in ("**/*.sh", "**/*.sub", ".ci/run")
    for p in ROOT.glob(pattern)
    if ".git" not in p.parts and "results" not in p.parts
)


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (make setup-test installs it)")
    return path


def test_there_are_scripts_to_check():
    names = {p.name for p in SHELL_SCRIPTS}
    assert {"run.sub", "train.sh", "run_wt103_base.sh", "slurm_run.sh", "setup.sh"} <= names


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_script_passes_shellcheck(script):
    proc = subprocess.run(
        [
            tool("shellcheck"),
            "--shell=bash",
            "--severity=warning",
            "-x",
            "-P",
            "SCRIPTDIR",
            str(script),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_passes_hadolint():
    proc = subprocess.run(
        [tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_installs_with_the_set_up_script_ci_runs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "bash scripts/setup.sh runtime" in dockerfile
    assert "bash scripts/setup.sh runtime" in makefile
    assert "pip install" not in dockerfile  # every install goes through setup.sh
    assert "torch" not in (ROOT / "requirements.txt").read_text().split("# BERT")[0].replace(
        "torch is not listed", ""
    )

"""A real one-node SLURM cluster for the tests: munge, slurmctld and slurmd started by hand.

Debian's `slurm-wlm` and `munge` are installed with apt-get when missing (root only);
the daemons run without systemd from a scratch folder, and clients find the cluster
through the SLURM_CONF variable that `SlurmCluster.env` carries. Jobs see 2 CPUs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

PACKAGES = ("slurm-wlm", "munge")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def ensure_installed() -> None:
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("needs Debian's slurm-wlm and munge (installable only as root with apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], env=env, check=True)
    _run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
        env=env,
        check=True,
    )


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise RuntimeError(f"SLURM test cluster: {what} did not happen in {timeout:.0f} s")
        time.sleep(0.1)


def start_munge() -> None:
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        _run(["mungekey", "--create"], check=True)
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    if _run(["bash", "-c", "munge -n </dev/null | unmunge"]).returncode != 0:
        _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
        wait_for(
            lambda: _run(["bash", "-c", "munge -n </dev/null | unmunge"]).returncode == 0,
            "munged start",
        )


def free_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 4096


class SlurmCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        memory = max(min(free_memory_mb() - 1024, 16000), 1024)
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=lmtest",
                    f"SlurmctldHost={self.host}",
                    "SlurmUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmdSpoolDir={self.root / 'spool'}",
                    f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "MpiDefault=none",
                    "MailProg=/bin/true",
                    "ReturnToService=2",
                    "MinJobAge=600",
                    "KillWait=10",
                    f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs=2 Sockets=1 "
                    f"CoresPerSocket=2 ThreadsPerCore=1 RealMemory={memory} State=UNKNOWN",
                    f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE "
                    "State=UP OverSubscribe=YES",
                    "",
                ]
            )
        )

    def start(self) -> None:
        ensure_installed()
        start_munge()
        self.write_config()
        _run(["slurmctld"], env=self.env, check=True)
        wait_for(lambda: "UP" in _run(["scontrol", "ping"], env=self.env).stdout, "slurmctld")
        _run(["slurmd"], env=self.env, check=True)
        wait_for(
            lambda: _run(["sinfo", "-h", "-o", "%T"], env=self.env).stdout.strip() == "idle",
            "slurmd registering an idle node",
        )

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld"):
            pid_file = self.root / f"{name}.pid"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), 15)

    def submit(self, args: list[str], output: Path, **env: str) -> str:
        """Submit a batch job; returns its id."""
        proc = _run(
            ["sbatch", "--parsable", "-o", str(output), *args],
            env={**self.env, **env},
            check=True,
        )
        return proc.stdout.strip().split(";")[0]

    def wait(self, job_id: str, timeout: float = 600) -> int:
        """Wait for the job to end (polling briefly: sbatch --wait polls slowly); its exit code."""
        deadline = time.time() + timeout
        while True:
            info = _run(["scontrol", "show", "job", "-o", job_id], env=self.env).stdout
            state = dict(field.split("=", 1) for field in info.split() if "=" in field)
            if state.get("JobState") in (
                "COMPLETED",
                "FAILED",
                "CANCELLED",
                "TIMEOUT",
                "NODE_FAIL",
                "OUT_OF_MEMORY",
                "PREEMPTED",
            ):
                return int(state.get("ExitCode", "1:0").split(":")[0])
            if time.time() > deadline:
                raise TimeoutError(f"SLURM job {job_id} still {state.get('JobState')}")
            time.sleep(0.2)

    def sbatch(self, args: list[str], timeout: float = 600, **env: str) -> tuple[int, str]:
        """Submit and wait: (exit code of the job, its output)."""
        out = self.root / f"job_{time.monotonic_ns()}.out"
        code = self.wait(self.submit(args, out, **env), timeout)
        return code, out.read_text() if out.exists() else ""

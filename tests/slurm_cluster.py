"""A private single-node SLURM cluster for tests, from Debian's `slurm-wlm` and `munge`.

Everything lives in one temporary directory: a munged on its own socket and key,
slurmctld and slurmd on non-default ports, with state, spool, pid and log files beside
them. The node declares `gpus` GPUs as a generic resource (GRES) backed by /dev/null
and other device files nothing opens, so `sbatch --gpus=1` is scheduled for real on a
machine without a GPU. Nothing outside the
directory is read or written, and `SLURM_CONF` in `env` points the client commands
(sbatch, squeue, scancel, ...) at this cluster only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
PACKAGES = "slurm-wlm munge"


def _which(name: str) -> str | None:
    # Daemons live in /usr/sbin, which a non-login PATH may lack.
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def missing_programs() -> list[str]:
    return [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return f"({path} missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class SlurmCluster:
    """Start with `start()`, stop with `stop()`; `env` is the environment for clients."""

    partition: str = "smoke"
    gpus: int = 1
    root: Path = field(init=False)
    host: str = field(init=False)
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        # munged insists that every directory above its socket is searchable by all.
        self.root = Path(tempfile.mkdtemp(prefix="slurm-test-"))
        self.root.chmod(0o755)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.log_dir = self.root / "log"
        self.env = dict(os.environ)

    # -- set-up -------------------------------------------------------------------------
    def _write_files(self) -> None:
        for name in ("munge", "state", "spool", "run", "log", "bin"):
            (self.root / name).mkdir(mode=0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)

        # The node's real CPUs and memory, as slurmd sees them; the GPU is declared.
        hardware = subprocess.run(
            [_which("slurmd"), "-C"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[0]
        node = re.sub(r"^NodeName=\S+", f"NodeName={self.host}", hardware)
        r = self.root
        self.conf.write_text(
            f"""\
ClusterName=smstest
SlurmctldHost={self.host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={self.log_dir}/slurmctld.log
SlurmdLogFile={self.log_dir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=5
# Start batch jobs as soon as they are submitted (the default waits up to 3 s).
SchedulerParameters=batch_sched_delay=0
# Finished jobs stay visible to squeue for an hour: the Snakemake plugin polls job
# states with squeue here (no accounting database), and the tests read them afterwards.
MinJobAge=3600
GresTypes=gpu
{node} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
"""
        )
        # One distinct device file per GPU (slurmd refuses duplicates); nothing opens them.
        files = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random")[: self.gpus]
        gpu_files = "\n".join(f"NodeName={self.host} Name=gpu File={name}" for name in files)
        (self.root / "gres.conf").write_text(f"AutoDetect=off\n{gpu_files}\n")

        # Snakemake's slurm-jobstep plugin starts each job's command with `srun`, after
        # removing every SLURM_* variable but the job's id from the environment,
        # SLURM_CONF included; srun would then look for /etc/slurm/slurm.conf. This shim,
        # first on PATH, points it back at this cluster.
        shim = self.root / "bin" / "srun"
        shim.write_text(f'#!/bin/sh\nexport SLURM_CONF="{self.conf}"\nexec "{_which("srun")}" "$@"\n')
        shim.chmod(0o755)

        self.env["SLURM_CONF"] = str(self.conf)
        self.env["PATH"] = os.pathsep.join([str(self.root / "bin"), self.env.get("PATH", "")])
        for name in list(self.env):  # not inside someone else's allocation
            if name.startswith(("SLURM_", "SBATCH_", "SRUN_")) and name != "SLURM_CONF":
                del self.env[name]

    def _daemon(self, name: str, *args: str) -> None:
        result = subprocess.run(
            [_which(name), *args], env=self.env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{name} did not start: {result.stderr}\n{self.diagnostics()}")

    def start(self, timeout: float = 60) -> SlurmCluster:
        if os.geteuid() != 0:
            raise RuntimeError("the test SLURM cluster runs its daemons as root (SlurmUser=root)")
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self._write_files()
        m = self.root / "munge"
        self._daemon(
            "munged",
            f"--socket={self.munge_socket}",
            f"--key-file={m}/munge.key",
            f"--pid-file={m}/munged.pid",
            f"--log-file={m}/munged.log",
            f"--seed-file={m}/munged.seed",
        )
        self._daemon("slurmctld")
        self._daemon("slurmd")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run("sinfo", "--noheader", "--format=%t", check=False).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the node did not become idle (sinfo: {state!r})\n{self.diagnostics()}")

    # -- use ----------------------------------------------------------------------------
    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), env=self.env, capture_output=True, text=True, check=check)

    def jobs(self) -> list[dict[str, str]]:
        """Every job this cluster has seen (finished ones too, see MinJobAge)."""
        fields = ["JobID", "State", "Name", "Comment", "Account", "Partition", "tres-per-job", "tres-alloc"]
        out = self.run(
            "squeue", "--states=all", "--noheader", "--Format", ",".join(f"{f}:|" for f in fields)
        ).stdout  # fmt: skip
        rows = []
        for line in out.splitlines():
            values = [value.strip() for value in line.split("|")][: len(fields)]
            rows.append(dict(zip(fields, values, strict=True)))
        return sorted(rows, key=lambda row: int(row["JobID"]))

    def submissions(self) -> list[int]:
        """Job ids of every batch submission, from slurmctld's own log."""
        text = (self.log_dir / "slurmctld.log").read_text(errors="replace")
        return [int(i) for i in re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", text)]

    def diagnostics(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{_tail(path)}"
            for path in (self.root / "munge" / "munged.log", self.log_dir / "slurmctld.log",
                         self.log_dir / "slurmd.log")
        )  # fmt: skip

    # -- tear-down ----------------------------------------------------------------------
    def stop(self) -> None:
        if (self.root / "run" / "slurmctld.pid").exists():
            self.run("scancel", "--full", "--user", "root", check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                states = self.run("squeue", "--noheader", "--format=%T", check=False).stdout.split()
                if not {"RUNNING", "COMPLETING", "PENDING", "CONFIGURING"} & set(states):
                    break
                time.sleep(0.5)
        for pid_file in ("run/slurmd.pid", "run/slurmctld.pid", "munge/munged.pid"):
            self._kill(self.root / pid_file)
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _kill(pid_file: Path, timeout: float = 15) -> None:
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)

"""The warm worker (worker.py): a job run through it is the job run on its own (same
bytes, same exit status, same log), killing the client kills the job, and without a
worker, or inside a SLURM job, the client runs the command itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparse_soups.client import SOCKET_VARIABLE
from sparse_soups.config import Settings
from sparse_soups.stages import stage_settings
from sparse_soups.worker import job_threads
from tests.conftest import REPO


def _wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory):
    """A worker serving this test process's clients; stopped (and checked gone) after."""
    path = tmp_path_factory.mktemp("worker") / "worker.sock"
    process = subprocess.Popen([sys.executable, "-m", "sparse_soups.worker", str(path)])
    _wait_for(path.exists)
    yield path, process
    process.terminate()
    assert process.wait(timeout=30) == 0
    assert not path.exists()


CLIENT = REPO / "src" / "sparse_soups" / "client.py"


def _client(
    args: list[str], log: Path, worker: Path | None, script: bool = False, **env: str
) -> subprocess.Popen:
    """`python -m sparse_soups ARGS`, or as the workflow's jobs start it (`script`): the
    client file alone, without site-packages."""
    environment = {k: v for k, v in os.environ.items() if k != SOCKET_VARIABLE} | env
    if worker is not None:
        environment[SOCKET_VARIABLE] = str(worker)
    command = [sys.executable, "-I", "-S", str(CLIENT)] if script else [sys.executable, "-m", "sparse_soups"]
    with open(log, "w") as stream:
        return subprocess.Popen(
            [*command, *args], stdout=stream, stderr=subprocess.STDOUT, env=environment, cwd=log.parent
        )


def _pretrain_args(
    tmp_path: Path, prepared_path: Path, tiny_settings: Settings, epochs: int = 2
) -> list[str]:
    settings = stage_settings(tiny_settings, "pretrain")
    settings["pretrain"]["epochs"] = epochs
    path = tmp_path / f"pretrain{epochs}.json"
    path.write_text(json.dumps(settings))
    return [
        "pretrain",
        "--settings",
        str(path),
        "--data",
        str(prepared_path),
        "--seed",
        "0",
        "--threads",
        "2",
    ]


def _children(pid: int) -> set[int]:
    return {int(task) for task in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_a_job_through_the_worker_is_the_job_on_its_own(
    worker, tmp_path, prepared_path, tiny_settings
) -> None:
    args = _pretrain_args(tmp_path, prepared_path, tiny_settings)
    warm = _client([*args, "--out", "warm/model.pt"], tmp_path / "warm.log", worker[0], script=True)
    cold = _client([*args, "--out", "cold/model.pt"], tmp_path / "cold.log", None)
    assert warm.wait(timeout=300) == 0 and cold.wait(timeout=300) == 0
    # The same bytes; the relative --out resolved in the client's directory.
    assert (tmp_path / "warm/model.pt").read_bytes() == (tmp_path / "cold/model.pt").read_bytes()
    # The job's log reached the client's stdout: every epoch and the CPU line.
    for side in ("warm", "cold"):
        log = (tmp_path / f"{side}.log").read_text()
        assert "epoch 2/2" in log and "cpu " in log and "training " in log, log


def test_a_failing_job_keeps_its_status_and_message(worker, tmp_path, prepared_path, tiny_settings) -> None:
    args = _pretrain_args(tmp_path, prepared_path, tiny_settings)
    args[args.index("--data") + 1] = str(tmp_path / "missing.pt")
    statuses = {}
    for side, path in (("warm", worker[0]), ("cold", None)):
        client = _client([*args, "--out", f"{side}.pt"], tmp_path / f"{side}.log", path)
        statuses[side] = client.wait(timeout=120)
        log = (tmp_path / f"{side}.log").read_text()
        assert "missing.pt" in log and "error" in log, log
    assert statuses == {"warm": 1, "cold": 1}
    usage = _client(["pretrain", "--no-such-option"], tmp_path / "usage.log", worker[0])
    assert usage.wait(timeout=60) == 2  # argparse's usage error, as on its own
    assert "arguments are required: --settings" in (tmp_path / "usage.log").read_text()


def test_killing_the_client_kills_its_job(worker, tmp_path, prepared_path, tiny_settings) -> None:
    path, process = worker
    args = _pretrain_args(tmp_path, prepared_path, tiny_settings, epochs=500)
    client = _client([*args, "--out", "model.pt"], tmp_path / "long.log", path)
    _wait_for(lambda: "epoch 1/500" in (tmp_path / "long.log").read_text())
    (job,) = _children(process.pid)
    client.send_signal(signal.SIGKILL)  # no handler runs: the worker sees the socket close
    client.wait(timeout=30)
    _wait_for(lambda: job not in _children(process.pid), seconds=30)
    assert not (tmp_path / "model.pt").exists()
    # A client stopped with SIGTERM passes it on: the job's status says so.
    client = _client([*args, "--out", "model.pt"], tmp_path / "term.log", path)
    _wait_for(lambda: "epoch 1/500" in (tmp_path / "term.log").read_text())
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) == 128 + signal.SIGTERM
    assert not (tmp_path / "model.pt").exists()


def test_without_a_worker_or_inside_slurm_the_client_runs_the_job(
    worker, tmp_path, prepared_path, tiny_settings
) -> None:
    args = [*_pretrain_args(tmp_path, prepared_path, tiny_settings, epochs=1), "--out", "model.pt"]
    gone = _client(args, tmp_path / "gone.log", tmp_path / "no-such.sock")
    assert gone.wait(timeout=300) == 0
    (tmp_path / "model.pt").unlink()
    # The job's thin client, without site-packages, runs `python -m sparse_soups` instead.
    script = _client(args, tmp_path / "script.log", tmp_path / "no-such.sock", script=True)
    assert script.wait(timeout=300) == 0 and "epoch 1/1" in (tmp_path / "script.log").read_text()
    (tmp_path / "model.pt").unlink()
    slurm = _client(args, tmp_path / "slurm.log", worker[0], SLURM_JOB_ID="1")
    _wait_for(lambda: "epoch" in (tmp_path / "slurm.log").read_text() or slurm.poll() is not None, 300)
    assert slurm.pid not in _children(worker[1].pid) and not _children(worker[1].pid)
    assert slurm.wait(timeout=300) == 0 and (tmp_path / "model.pt").exists()


def test_the_worker_exits_with_the_process_that_started_it(tmp_path) -> None:
    """A killed Snakemake never runs onsuccess/onerror: its worker must not linger."""
    path = tmp_path / "orphan.sock"
    starter = subprocess.run(
        [sys.executable, "-c",
         "import subprocess, sys, time, os\n"
         f"p = subprocess.Popen([sys.executable, '-m', 'sparse_soups.worker', {str(path)!r}])\n"
         f"while not os.path.exists({str(path)!r}): time.sleep(0.05)\n"
         "print(p.pid)"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    pid = int(starter.stdout.split()[0])
    _wait_for(
        lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )
    assert not path.exists()


def test_jobs_wait_for_a_free_cpu_in_the_order_they_came(tmp_path, prepared_path, tiny_settings) -> None:
    """A worker with one CPU runs one single-thread job at a time, whatever Snakemake's
    --cores; a job asking for more threads than there are CPUs runs alone."""
    path = tmp_path / "one.sock"
    log = tmp_path / "worker.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "sparse_soups.worker", str(path), "1"], stdout=stream, stderr=stream
        )
    try:
        _wait_for(path.exists)
        long = _pretrain_args(tmp_path, prepared_path, tiny_settings, epochs=500)  # --threads 2
        first = _client([*long, "--out", "first.pt"], tmp_path / "first.log", path)
        _wait_for(lambda: "epoch 1/500" in (tmp_path / "first.log").read_text())
        args = _pretrain_args(tmp_path, prepared_path, tiny_settings)
        waiting = _client([*args, "--out", "gone.pt"], tmp_path / "gone.log", path)
        second = _client([*args, "--out", "second.pt"], tmp_path / "second.log", path)
        time.sleep(0.5)  # both queued behind the first, which runs for minutes
        waiting.send_signal(signal.SIGKILL)  # a queued job whose client died never starts
        waiting.wait(timeout=30)
        time.sleep(1.0)  # the worker has seen the hang-up
        assert (tmp_path / "second.log").read_text() == ""  # still waiting
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 128 + signal.SIGTERM
        assert second.wait(timeout=300) == 0 and (tmp_path / "second.pt").exists()
        assert not (tmp_path / "gone.pt").exists() and (tmp_path / "gone.log").read_text() == ""
        first_log, second_log = ((tmp_path / f"{n}.log").read_text() for n in ("first", "second"))
        assert _log_times(second_log)[0] >= _log_times(first_log)[1]  # one after the other
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines = log.read_text()
    assert lines.count("pretrain: cpu") == 2 and "worker: cpu" in lines  # the killed one and the second


def _log_times(log: str) -> tuple[str, str]:
    """The timestamps of a job log's first and last lines (sortable as text)."""
    stamps = [line[:23] for line in log.splitlines() if line[:4].isdigit()]
    return stamps[0], stamps[-1]


def test_job_threads_come_from_the_command_line() -> None:
    assert job_threads(["retrain", "--seed", "0", "--threads", "4", "--out", "x"]) == 4
    assert job_threads(["report", "--out", "x"]) == 1
    assert job_threads(["evaluate", "--threads"]) == 1

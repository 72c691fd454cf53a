"""The warm worker's client: what each local job's process is (worker.py).

A local workflow job runs `python -I -S .../sparse_soups/client.py COMMAND ...` (the
workflow's `SPARSE_SOUPS`): no site-packages, no library import, only this file and the
standard library, ~40 ms of CPU. It hands its arguments, working directory, environment
and stdin/stdout/stderr to the worker over a Unix socket and exits with the job's status.
Without a worker to use (none started, its socket gone, a SLURM job) it replaces itself
with `python -m sparse_soups COMMAND ...`, which runs the command in its own process.

Self-contained on purpose: run as a script it has no package to import from.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys

SOCKET_VARIABLE = "SPARSE_SOUPS_WORKER"
HEADER = struct.Struct("!I")  # the request's length


def run_in_worker(argv: list[str]) -> int | None:
    """Run the command in the worker and return its exit status; None if there is no
    worker to use (the caller then runs the command itself)."""
    path = os.environ.get(SOCKET_VARIABLE)
    if not path or "SLURM_JOB_ID" in os.environ:  # a cluster job runs on its own node
        return None
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
    except OSError:  # not started yet, or already gone
        client.close()
        return None
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with client, open(os.devnull, "rb") as devnull:
        streams = [fd if _is_open(fd) else devnull.fileno() for fd in (0, 1, 2)]
        socket.send_fds(client, [HEADER.pack(len(request)) + request], streams)
        replies = client.makefile("r")
        started = replies.readline()  # once a CPU is free for it: the worker may queue it
        if not started:
            print("sparse-soups: the warm worker closed the connection", file=sys.stderr)
            return 1
        child = json.loads(started)["pid"]
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, lambda sig, _frame: _signal_child(child, sig))
        finished = replies.readline()
    if not finished:
        print(f"sparse-soups: the warm worker's job {child} ended without a status", file=sys.stderr)
        return 1
    status = json.loads(finished)["status"]
    return status if status >= 0 else 128 - status  # killed by a signal: the shell's convention


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _signal_child(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, number)


if __name__ == "__main__":
    status = run_in_worker(sys.argv[1:])
    if status is None:  # the command in this process, with the site-packages this one skipped
        os.execv(sys.executable, [sys.executable, "-m", "sparse_soups", *sys.argv[1:]])
    sys.exit(status)

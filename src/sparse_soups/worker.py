"""A warm worker: local jobs fork from one process that has already imported torch.

Importing torch and the library costs 2-4 s of CPU per process, which for the default
study's ~230 short jobs was a third of its CPU time. With the worker, each local job's
process is a thin client (client.py: the standard library only, ~40 ms): it hands its
arguments, working directory, environment and stdin/stdout/stderr to the worker over a
Unix socket, the worker forks a child that runs the command exactly as its own process
would have (same `cli.main`, output into the job's log file), and the client exits with
the child's status. The worker runs at most as many jobs' threads at once as the
machine has CPUs (`local_cpus`); the rest wait in its queue.

Nothing else changes: a job still reads and writes the same files, Snakemake still
schedules, logs and retries it, and without a worker (no `SPARSE_SOUPS_WORKER`, the
socket gone, a SLURM job) the client runs the command itself. Killing the client kills
its child; the worker exits when Snakemake does. Only the worker process imports torch
before forking, and it never computes, so no thread pool or CUDA context is forked.

The workflow starts the worker in `onstart` for local runs (`warm_start: true`, the
default) and stops it in `onsuccess`/`onerror`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .client import HEADER, SOCKET_VARIABLE, _signal_child

_PRELOAD = ("sparse_soups.cli", "sparse_soups.reporting", "torchvision")
_process: subprocess.Popen | None = None


# --- the worker ----------------------------------------------------------------------


def machine_cpus() -> int:
    """The CPUs this process may run on (a cgroup or `taskset` may allow fewer than exist)."""
    return len(os.sched_getaffinity(0))


@dataclass
class _Request:
    connection: socket.socket
    argv: list[str]
    cwd: str
    env: dict[str, str]
    fds: list[int]
    threads: int  # the job's `--threads`: how many of the worker's CPUs it occupies
    arrived: float = field(default_factory=time.monotonic)

    @property
    def command(self) -> str:
        return self.argv[0] if self.argv else ""


def job_threads(argv: list[str]) -> int:
    """The `--threads N` of a job's arguments (1 when absent or unreadable)."""
    for flag, value in itertools.pairwise(argv):
        if flag == "--threads" and value.isdigit():
            return max(1, int(value))
    return 1


class _Worker:
    """Forks the queued requests while their threads fit on the machine's CPUs.

    Snakemake's `--cores 8` on 2 CPUs starts 8 single-thread jobs at once; time-sliced,
    each of them took ~8% more CPU for the same arithmetic (benchmarks/README.md). Here
    the extra jobs wait, in the order they came, for CPUs to free up. A job asking for
    more threads than the machine has runs alone."""

    def __init__(self, listener: socket.socket, cpus: int) -> None:
        self.listener, self.cpus = listener, cpus
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, ("accept", None))
        self.queue: deque[_Request] = deque()
        self.children: dict[int, tuple[_Request, float]] = {}  # pid: (request, started)
        self.busy = 0  # threads of the running children

    def serve_until_orphaned(self) -> None:
        parent = os.getppid()
        while os.getppid() == parent:
            for key, _ in self.selector.select(timeout=1.0):
                kind, data = key.data
                if kind == "accept":
                    connection, _ = self.listener.accept()
                    self.selector.register(connection, selectors.EVENT_READ, ("request", None))
                elif kind == "request":
                    self._enqueue(key.fileobj)
                elif kind == "queued":  # the client hung up before its job started
                    if not key.fileobj.recv(1):
                        self._drop(data)
                elif kind == "client":  # the client hung up before its child finished
                    if not key.fileobj.recv(1):
                        _signal_child(data, signal.SIGTERM)
                        self.selector.unregister(key.fileobj)
                elif kind == "exit":
                    self._finish(key.fileobj, data)

    def stop_children(self) -> None:
        for pid in self.children:
            _signal_child(pid, signal.SIGTERM)

    def _enqueue(self, connection: socket.socket) -> None:
        self.selector.unregister(connection)
        try:
            message, fds = _receive(connection)
        except (OSError, ValueError):
            connection.close()
            return
        request = _Request(connection, message["argv"], message["cwd"], message["env"], fds,
                           job_threads(message["argv"]))  # fmt: skip
        self.queue.append(request)
        self.selector.register(connection, selectors.EVENT_READ, ("queued", request))
        self._start_ready()

    def _drop(self, request: _Request) -> None:
        self.queue.remove(request)
        self.selector.unregister(request.connection)
        request.connection.close()
        for fd in request.fds:
            os.close(fd)

    def _start_ready(self) -> None:
        while self.queue:
            threads = min(self.queue[0].threads, self.cpus)
            if self.busy and self.busy + threads > self.cpus:
                return
            request = self.queue.popleft()
            self.selector.unregister(request.connection)
            self._fork(request)
            self.busy += threads

    def _fork(self, request: _Request) -> None:
        pid = os.fork()
        if pid == 0:
            self.listener.close()
            request.connection.close()
            _run_child(request)  # never returns
        for fd in request.fds:
            os.close(fd)
        self.children[pid] = (request, time.monotonic())
        request.connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        self.selector.register(request.connection, selectors.EVENT_READ, ("client", pid))
        self.selector.register(os.pidfd_open(pid), selectors.EVENT_READ, ("exit", pid))

    def _finish(self, pidfd: int, pid: int) -> None:
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status, usage = os.wait4(pid, 0)
        request, started = self.children.pop(pid)
        self.busy -= min(request.threads, self.cpus)
        # The job's whole CPU time, exit included: benchmarks/default_run.py reads these lines.
        print(f"job {pid} {request.command}: cpu {usage.ru_utime + usage.ru_stime:.2f} s, "
              f"waited {started - request.arrived:.1f} s", flush=True)  # fmt: skip
        with contextlib.suppress(KeyError):
            self.selector.unregister(request.connection)
        with contextlib.suppress(OSError):
            reply = {"status": os.waitstatus_to_exitcode(status)}
            request.connection.sendall(json.dumps(reply).encode() + b"\n")
        request.connection.close()
        self._start_ready()


def serve(path: str, cpus: int | None = None) -> None:
    """Preload the library, then run the requests until the parent exits."""
    import importlib

    for module in _PRELOAD:
        importlib.import_module(module)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.replace(path + ".tmp", path)  # clients connect only once everything is imported
    worker = _Worker(listener, cpus or machine_cpus())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        worker.serve_until_orphaned()
    finally:
        worker.stop_children()
        with contextlib.suppress(OSError):
            os.unlink(path)
        # Its own CPU (imports, forks), apart from the jobs': benchmarks/default_run.py.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"worker: cpu {usage.ru_utime + usage.ru_stime:.2f} s", flush=True)


def _receive(connection: socket.socket) -> tuple[dict, list[int]]:
    message, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
    if len(message) < HEADER.size or len(fds) != 3:
        raise ValueError("not a request")
    (length,) = HEADER.unpack_from(message)
    body = bytearray(message[HEADER.size :])
    while len(body) < length:
        chunk = connection.recv(length - len(body))
        if not chunk:
            raise ValueError("truncated request")
        body += chunk
    return json.loads(body), fds


def _run_child(request: _Request) -> None:
    """Become the job: its streams, directory, environment and arguments, then `cli.main`."""
    code = 1
    try:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        for target, fd in enumerate(request.fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request.cwd)
        os.environ.clear()
        os.environ.update(request.env)
        sys.argv = ["sparse-soups", *request.argv]
        from .cli import main

        code = main(request.argv)
    except SystemExit as exit_:  # argparse's --help and usage errors
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # the job's log gets the traceback, as without the worker
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# --- the workflow's side: onstart / onsuccess / onerror ------------------------------------


def start(log: str | Path, python_path: str, cpus: int | None = None) -> None:
    """Start the worker for this Snakemake process's jobs, which inherit its socket path;
    at most `cpus` of their threads run at once (None: `machine_cpus()`)."""
    global _process
    if _process is not None or not hasattr(os, "pidfd_open"):
        return
    path = os.path.join(tempfile.mkdtemp(prefix="sparse-soups-"), "worker.sock")
    search_path = os.pathsep.join(filter(None, [python_path, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=search_path)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as stream:
        _process = subprocess.Popen(
            [sys.executable, "-m", "sparse_soups.worker", path, str(cpus or machine_cpus())],
            env=env, stdout=stream, stderr=stream,
        )  # fmt: skip
    os.environ[SOCKET_VARIABLE] = path


def stop() -> None:
    """Stop the worker and wait for it, so its CPU time is counted with Snakemake's."""
    global _process
    if _process is None:
        return
    path = os.environ.pop(SOCKET_VARIABLE, "")
    _process.terminate()
    try:
        _process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        _process.kill()
        _process.wait()
    _process = None
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)

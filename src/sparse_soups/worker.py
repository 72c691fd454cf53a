"""A warm worker: local jobs fork from one process that has already imported torch.

Each job of a local run is `python -m sparse_soups COMMAND ...`. Importing torch and
the library costs 2-4 s of CPU per process, which for the default study's ~230 short
jobs was a third of its CPU time. With the worker, `python -m sparse_soups` is a thin
client (standard library only, ~40 ms): it hands its arguments, working directory,
environment and its stdin/stdout/stderr to the worker over a Unix socket, the worker
forks a child that runs the command exactly as the process would have (same `cli.main`,
output into the job's log file), and the client exits with the child's status.

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
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

SOCKET_VARIABLE = "SPARSE_SOUPS_WORKER"
_HEADER = struct.Struct("!I")  # the request's length
_PRELOAD = ("sparse_soups.cli", "sparse_soups.reporting", "torchvision")
_process: subprocess.Popen | None = None


# --- the client: `python -m sparse_soups ...` -------------------------------------------


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
        socket.send_fds(client, [_HEADER.pack(len(request)) + request], streams)
        replies = client.makefile("r")
        started = replies.readline()
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


# --- the worker ----------------------------------------------------------------------


def serve(path: str) -> None:
    """Preload the library, then fork one child per request until the parent exits."""
    import importlib

    for module in _PRELOAD:
        importlib.import_module(module)
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.replace(path + ".tmp", path)  # clients connect only once everything is imported
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, ("accept", None))
    children: dict[int, tuple[socket.socket, str]] = {}  # pid: (client, command)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while os.getppid() == parent:
            for key, _ in selector.select(timeout=1.0):
                kind, data = key.data
                if kind == "accept":
                    connection, _ = listener.accept()
                    selector.register(connection, selectors.EVENT_READ, ("request", None))
                elif kind == "request":
                    _start_child(key.fileobj, selector, listener, children)
                elif kind == "client":  # the client hung up before its child finished
                    if not key.fileobj.recv(1):
                        _signal_child(data, signal.SIGTERM)
                        selector.unregister(key.fileobj)
                elif kind == "exit":
                    _finish_child(key.fileobj, data, selector, children)
    finally:
        for pid in children:
            _signal_child(pid, signal.SIGTERM)
        with contextlib.suppress(OSError):
            os.unlink(path)


def _start_child(connection: socket.socket, selector, listener, children: dict) -> None:
    selector.unregister(connection)
    try:
        request, fds = _receive(connection)
    except (OSError, ValueError):
        connection.close()
        return
    pid = os.fork()
    if pid == 0:
        listener.close()
        connection.close()
        _run_child(request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    children[pid] = (connection, request["argv"][0] if request["argv"] else "")
    connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    selector.register(connection, selectors.EVENT_READ, ("client", pid))
    selector.register(os.pidfd_open(pid), selectors.EVENT_READ, ("exit", pid))


def _receive(connection: socket.socket) -> tuple[dict, list[int]]:
    message, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
    if len(message) < _HEADER.size or len(fds) != 3:
        raise ValueError("not a request")
    (length,) = _HEADER.unpack_from(message)
    body = bytearray(message[_HEADER.size :])
    while len(body) < length:
        chunk = connection.recv(length - len(body))
        if not chunk:
            raise ValueError("truncated request")
        body += chunk
    return json.loads(body), fds


def _finish_child(pidfd: int, pid: int, selector, children: dict) -> None:
    selector.unregister(pidfd)
    os.close(pidfd)
    _, status, usage = os.wait4(pid, 0)
    connection, command = children.pop(pid)
    # The job's whole CPU time, exit included: benchmarks/default_run.py reads these lines.
    print(f"job {pid} {command}: cpu {usage.ru_utime + usage.ru_stime:.2f} s", flush=True)
    with contextlib.suppress(KeyError):
        selector.unregister(connection)
    with contextlib.suppress(OSError):
        connection.sendall(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    connection.close()


def _run_child(request: dict, fds: list[int]) -> None:
    """Become the job: its streams, directory, environment and arguments, then `cli.main`."""
    code = 1
    try:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["sparse-soups", *request["argv"]]
        from .cli import main

        code = main(request["argv"])
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


def start(log: str | Path, python_path: str) -> None:
    """Start the worker for this Snakemake process's jobs, which inherit its socket path."""
    global _process
    if _process is not None or not hasattr(os, "pidfd_open"):
        return
    path = os.path.join(tempfile.mkdtemp(prefix="sparse-soups-"), "worker.sock")
    search_path = os.pathsep.join(filter(None, [python_path, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=search_path)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as stream:
        _process = subprocess.Popen(
            [sys.executable, "-m", "sparse_soups.worker", path], env=env, stdout=stream, stderr=stream
        )
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
    serve(sys.argv[1])

"""gunicorn serving wsgi:app on 127.0.0.1 for the length of a `with` block, and stopped whatever happens."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app import ROOT

HOST = "127.0.0.1"
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class ServerOptions:
    """How gunicorn runs: the worker processes, their class and, for gthread, the threads in each.

    Sync workers by default: docs/performance.md ("Why sync workers") has the measurements behind the choice.
    """

    workers: int = 2
    worker_class: str = "sync"
    threads: int = 1

    def describe(self) -> str:
        threads = f" x {self.threads} threads" if self.worker_class == "gthread" else ""
        return f"gunicorn {self.workers} {self.worker_class} workers{threads}"


@dataclass(frozen=True)
class RunningServer:
    """Where gunicorn listens, and its master process."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        """Raise if gunicorn has stopped: the figures of a run it did not finish mean nothing."""
        if self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited (status {self.process.returncode}):\n{tail(self.log_path)}")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def gunicorn_server(
    env: Mapping[str, str], options: ServerOptions, log_path: Path
) -> Iterator[RunningServer]:
    """Start gunicorn with `env`, wait until /healthz answers, yield, then stop it (TERM, then KILL)."""
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", str(options.workers),
        "--worker-class", options.worker_class,
        "--threads", str(options.threads),
        "--bind", f"{HOST}:{port}",
        "--error-logfile", "-",
        "--log-level", "warning",
        "--graceful-timeout", "5",
        "wsgi:app",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_ready(process, port, log_path)
        yield RunningServer(HOST, port, process, log_path)
    finally:
        _stop(process)


def _wait_until_ready(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {process.returncode}:\n{tail(log_path)}")
        connection = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    raise RuntimeError(
        f"gunicorn did not answer /healthz within {READY_TIMEOUT_SECONDS:.0f} s:\n{tail(log_path)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

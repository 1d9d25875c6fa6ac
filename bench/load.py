"""The load generator: concurrent HTTP/1.1 clients in a closed loop, bounded in count and in time.

Each client is a thread with its own connection, sending its next request as soon as the last answer is in,
like a till that waits for the answer. The connection is kept alive when the server allows it; gunicorn's
sync workers close it after every answer, so against them each request pays for a new connection, as any
client of such a server does. The clients are spread over a few processes so that the generator's GIL never
limits the rate, and they speak HTTP through a small exchange over a raw socket (a request is one prepared
byte string; an answer is a status line, a Content-Length and a body), which costs far less CPU than
http.client on a machine whose two cores the server needs. The generator's own CPU use is reported.

A run has a warm-up (connections opened, workers' caches and pools filled, nothing recorded), then the
measured window, which ends after `max_requests` requests or `seconds` seconds, whichever comes first.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized

from bench.seed import SeededCard

PURCHASES = "purchases"
REFERENCE = "reference"
PATHS = {PURCHASES: "/api/v1/purchases", REFERENCE: "/api/bench/reference"}
SOCKET_TIMEOUT_SECONDS = 30.0
ERROR_SAMPLES = 5
PROGRESS_EVERY_SECONDS = 5.0
CHILD_EXIT_SECONDS = 5.0


@dataclass(frozen=True)
class LoadPlan:
    """Who to hit and how hard: one endpoint, `clients` connections over `processes` processes."""

    endpoint: str
    host: str
    port: int
    api_key: str
    cards: Sequence[SeededCard]
    clients: int = 16
    processes: int = 4
    warmup_seconds: float = 3.0
    seconds: float = 20.0
    max_requests: int = 20_000


@dataclass
class LoadResult:
    """What the measured window saw. Latencies are of successful (2xx) requests, in seconds."""

    endpoint: str
    requests: int
    errors: int
    elapsed: float
    latencies: list[float]
    warmup_requests: int
    warmup_errors: int
    client_cores: float
    # CPU time used during the measured window: all CPUs together, and the server's processes alone.
    machine_cpu_seconds: float | None
    server_cpu_seconds: float | None
    machine_busy: float | None
    error_samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.requests - self.errors

    @property
    def rate(self) -> float:
        """Successful requests per second over the measured window."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0


class ProtocolError(Exception):
    """The server's answer was not the plain HTTP/1.1 response this client understands."""


class Connection:
    """One HTTP/1.1 connection, kept alive while the server allows and reopened when it closes."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request and read its whole answer: (status, body)."""
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=SOCKET_TIMEOUT_SECONDS)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(request)
        buffer = self._buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            self._receive()
        head = buffer[:end].decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x status line: {head[0]!r}")
        status = int(parts[1])
        length: int | None = None
        close = parts[0] == "HTTP/1.0"
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection":
                close = value.strip().lower() == "close"
            elif name == "transfer-encoding":
                raise ProtocolError("chunked answers are not expected from Flask's JSON responses")
        if length is None:
            raise ProtocolError("the answer has no Content-Length")
        while len(buffer) < length:
            self._receive()
        body = bytes(buffer[:length])
        del buffer[:length]
        if close:
            self.close()
        return status, body

    def _receive(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ProtocolError("the server closed the connection mid-answer")
        self._buffer += chunk


def request_builder(plan: LoadPlan) -> Callable[[random.Random], bytes]:
    """A function that makes the next request for a random card: a fresh Idempotency-Key every time."""
    host_line = f"Host: {plan.host}:{plan.port}\r\nContent-Type: application/json\r\n"
    path = PATHS[plan.endpoint]
    cards = plan.cards
    if plan.endpoint == PURCHASES:
        auth = f"Authorization: Bearer {plan.api_key}\r\n"

        def purchase(rng: random.Random) -> bytes:
            card = cards[rng.randrange(len(cards))]
            cents = rng.randrange(100, 5000)
            body = json.dumps({"code": card.code, "amount": f"{cents // 100}.{cents % 100:02d}"}).encode()
            return (
                f"POST {path} HTTP/1.1\r\n{host_line}{auth}Idempotency-Key: {uuid.uuid4()}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body

        return purchase

    def reference(rng: random.Random) -> bytes:
        card = cards[rng.randrange(len(cards))]
        body = json.dumps({"code": card.code, "card_id": card.id}).encode()
        return f"POST {path} HTTP/1.1\r\n{host_line}Content-Length: {len(body)}\r\n\r\n".encode() + body

    return reference


@dataclass
class _Tally:
    """One client thread's record of the measured window."""

    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    warmup_requests: int = 0
    warmup_errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    last_end: float = 0.0

    def add(self, other: _Tally) -> None:
        self.latencies += other.latencies
        self.requests += other.requests
        self.errors += other.errors
        self.warmup_requests += other.warmup_requests
        self.warmup_errors += other.warmup_errors
        self.error_samples += other.error_samples[: ERROR_SAMPLES - len(self.error_samples)]
        self.last_end = max(self.last_end, other.last_end)


def _take_ticket(counter: Synchronized[int], limit: int) -> bool:
    with counter.get_lock():
        if counter.value >= limit:
            return False
        counter.value += 1
        return True


def _run_client(plan: LoadPlan, counter: Synchronized[int], measure_from: float, stop_at: float) -> _Tally:
    """One client: requests back to back until the window closes or the request budget is spent."""
    build = request_builder(plan)
    rng = random.Random(os.urandom(16))
    connection = Connection(plan.host, plan.port)
    tally = _Tally()
    try:
        while True:
            now = time.monotonic()
            if now >= stop_at:
                break
            measured = now >= measure_from
            if measured and not _take_ticket(counter, plan.max_requests):
                break
            request = build(rng)
            started = time.monotonic()
            try:
                status, body = connection.exchange(request)
                problem = None if 200 <= status < 300 else f"HTTP {status}: {body[:300]!r}"
            except (OSError, ProtocolError, ValueError) as error:
                connection.close()
                problem = f"{type(error).__name__}: {error}"
            finished = time.monotonic()
            if not measured:
                tally.warmup_requests += 1
                if problem is not None:
                    tally.warmup_errors += 1
                    if len(tally.error_samples) < ERROR_SAMPLES:
                        tally.error_samples.append(f"(warm-up) {problem}")
                continue
            tally.requests += 1
            tally.last_end = finished
            if problem is None:
                tally.latencies.append(finished - started)
            else:
                tally.errors += 1
                if len(tally.error_samples) < ERROR_SAMPLES:
                    tally.error_samples.append(problem)
    finally:
        connection.close()
    return tally


def _client_process(
    plan: LoadPlan,
    threads: int,
    counter: Synchronized[int],
    measure_from: float,
    stop_at: float,
    results: multiprocessing.Queue[tuple[_Tally, float, float]],
) -> None:
    """A process of `threads` clients; sends back their merged tally, and the CPU and wall time it used."""
    # Ctrl-C reaches the whole process group; the parent decides when we stop, and a plain SIGTERM does it
    # (the parent's SIGTERM handler, inherited through fork, would turn it into a KeyboardInterrupt).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    cpu_before, wall_before = time.process_time(), time.monotonic()
    tallies: list[_Tally] = []

    def client() -> None:
        tallies.append(_run_client(plan, counter, measure_from, stop_at))

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    merged = _Tally()
    for tally in tallies:
        merged.add(tally)
    results.put((merged, time.process_time() - cpu_before, time.monotonic() - wall_before))


@dataclass(frozen=True)
class _CpuSample:
    """Clock ticks since boot: busy and total over all CPUs (/proc/stat), and the server's process tree."""

    busy: int
    total: int
    server: int | None


def _cpu_sample(server_pid: int | None) -> _CpuSample | None:
    """Where there is no /proc (not Linux), None: the CPU columns are then left out."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return _CpuSample(total - idle, total, _tree_ticks(server_pid) if server_pid else None)


def busy_fraction(seconds: float) -> float | None:
    """How busy all CPUs are over the next `seconds`: another job on the machine skews every figure."""
    before = _cpu_sample(None)
    time.sleep(seconds)
    after = _cpu_sample(None)
    if before is None or after is None or after.total <= before.total:
        return None
    return (after.busy - before.busy) / (after.total - before.total)


def _tree_ticks(pid: int) -> int | None:
    """User + system clock ticks of a process and all its descendants (gunicorn's master and workers)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name may hold spaces and parentheses; the fields after its last ")" are fixed.
            fields = stat.read().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            child_pids = [int(child) for child in children.read().split()]
    except (OSError, ValueError, IndexError):
        return None
    for child in child_pids:
        ticks += _tree_ticks(child) or 0
    return ticks


def run_load(plan: LoadPlan, progress: Callable[[str], None], server_pid: int | None = None) -> LoadResult:
    """Run the warm-up and the measured window against a running server, and collect what they saw.

    With `server_pid` (gunicorn's master), the CPU time of the server's processes is measured too.
    """
    processes = max(1, min(plan.processes, plan.clients))
    share, extra = divmod(plan.clients, processes)
    threads = [share + (1 if i < extra else 0) for i in range(processes)]
    context = multiprocessing.get_context("fork")
    counter: Synchronized[int] = context.Value("q", 0)
    results: multiprocessing.Queue[tuple[_Tally, float, float]] = context.Queue()
    measure_from = time.monotonic() + plan.warmup_seconds
    stop_at = measure_from + plan.seconds
    children = [
        context.Process(target=_client_process, args=(plan, n, counter, measure_from, stop_at, results),
                        daemon=True)
        for n in threads
    ]
    merged, cpu_seconds, wall_seconds = _Tally(), 0.0, 0.0
    cpu_start: _CpuSample | None = None
    cpu_end: _CpuSample | None = None
    sampled_start = False
    try:
        for child in children:
            child.start()
        received = 0
        next_progress = measure_from + PROGRESS_EVERY_SECONDS
        while received < len(children):
            now = time.monotonic()
            if not sampled_start and now >= measure_from:
                cpu_start, sampled_start = _cpu_sample(server_pid), True
            if now >= next_progress:
                done = counter.value
                if done < plan.max_requests and now < stop_at:
                    progress(f"  {plan.endpoint}: {now - measure_from:4.1f} s, {done:,} requests")
                next_progress += PROGRESS_EVERY_SECONDS
            try:
                wake = next_progress if sampled_start else measure_from
                tally, cpu, wall = results.get(timeout=min(0.5, max(0.01, wake - now)))
            except queue.Empty:
                if not any(child.is_alive() for child in children) and results.empty():
                    raise RuntimeError("a load generator process died without reporting") from None
                continue
            merged.add(tally)
            cpu_seconds += cpu
            wall_seconds = max(wall_seconds, wall)
            received += 1
        cpu_end = _cpu_sample(server_pid)
        for child in children:
            child.join(timeout=CHILD_EXIT_SECONDS)
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
                child.join()
    elapsed = max(0.0, merged.last_end - measure_from) if merged.requests else 0.0
    machine_cpu = server_cpu = machine_busy = None
    if cpu_start is not None and cpu_end is not None and cpu_end.total > cpu_start.total:
        ticks_per_second = os.sysconf("SC_CLK_TCK")
        machine_cpu = (cpu_end.busy - cpu_start.busy) / ticks_per_second
        machine_busy = (cpu_end.busy - cpu_start.busy) / (cpu_end.total - cpu_start.total)
        if cpu_start.server is not None and cpu_end.server is not None:
            server_cpu = (cpu_end.server - cpu_start.server) / ticks_per_second
    return LoadResult(
        endpoint=plan.endpoint,
        requests=merged.requests,
        errors=merged.errors,
        elapsed=elapsed,
        latencies=merged.latencies,
        warmup_requests=merged.warmup_requests,
        warmup_errors=merged.warmup_errors,
        client_cores=cpu_seconds / wall_seconds if wall_seconds > 0 else 0.0,
        machine_cpu_seconds=machine_cpu,
        server_cpu_seconds=server_cpu,
        machine_busy=machine_busy,
        error_samples=merged.error_samples,
    )

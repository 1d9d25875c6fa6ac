"""Figures from a load run, the results table, and the targets the issue sets for them.

Targets: committed purchases per second at least 0.6 times the reference endpoint's, and a purchase p99
under 50 ms, on each database. Rates count successful (2xx) requests; percentiles are nearest-rank over
their latencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.load import PURCHASES, REFERENCE, LoadResult

TARGET_RATIO = 0.6
TARGET_P99_MS = 50.0


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class EndpointFigures:
    """One endpoint's measured window, reduced to the numbers the table shows."""

    endpoint: str
    requests: int
    errors: int
    warmup_requests: int
    warmup_errors: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    client_cores: float
    machine_busy: float | None
    # CPU milliseconds per successful request: gunicorn's processes, the load generator, and the rest
    # (the database server, the kernel's network and disk work); None where /proc is missing.
    server_cpu_ms: float | None
    client_cpu_ms: float | None
    other_cpu_ms: float | None
    error_samples: list[str] = field(default_factory=list)

    @classmethod
    def from_load(cls, result: LoadResult) -> EndpointFigures:
        latencies = sorted(result.latencies)
        per_request = 1000 / result.ok if result.ok else 0.0
        client_cpu = result.client_cores * result.elapsed
        server_cpu = other_cpu = None
        if result.server_cpu_seconds is not None:
            server_cpu = result.server_cpu_seconds * per_request
        if result.machine_cpu_seconds is not None and result.server_cpu_seconds is not None:
            rest = result.machine_cpu_seconds - result.server_cpu_seconds - client_cpu
            other_cpu = max(0.0, rest) * per_request
        return cls(
            endpoint=result.endpoint,
            requests=result.requests,
            errors=result.errors,
            warmup_requests=result.warmup_requests,
            warmup_errors=result.warmup_errors,
            seconds=result.elapsed,
            rate=result.rate,
            p50_ms=percentile(latencies, 0.50) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000,
            max_ms=(latencies[-1] if latencies else 0.0) * 1000,
            client_cores=result.client_cores,
            machine_busy=result.machine_busy,
            server_cpu_ms=server_cpu,
            client_cpu_ms=client_cpu * per_request,
            other_cpu_ms=other_cpu,
            error_samples=result.error_samples,
        )


@dataclass(frozen=True)
class DatabaseReport:
    """Both endpoints on one database, the server that served them, and the ledger audit afterwards."""

    database: str
    version: str
    settings: str
    server: str
    clients: int
    cards: int
    endpoints: dict[str, EndpointFigures]
    ledger_ok: bool
    ledger_output: str

    @property
    def ratio(self) -> float:
        reference = self.endpoints[REFERENCE].rate
        return self.endpoints[PURCHASES].rate / reference if reference else 0.0

    @property
    def ratio_met(self) -> bool:
        return self.ratio >= TARGET_RATIO

    @property
    def p99_met(self) -> bool:
        return self.endpoints[PURCHASES].p99_ms < TARGET_P99_MS

    @property
    def errors(self) -> int:
        return sum(figures.errors + figures.warmup_errors for figures in self.endpoints.values())

    @property
    def valid(self) -> bool:
        """A run whose figures mean something: every request answered 2xx and the ledger balances."""
        return self.errors == 0 and self.ledger_ok

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatabaseReport:
        endpoints = {name: EndpointFigures(**figures) for name, figures in data["endpoints"].items()}
        return cls(**{**data, "endpoints": endpoints})


def _mark(met: bool) -> str:
    return "met" if met else "NOT MET"


def format_table(reports: Sequence[DatabaseReport]) -> str:
    """The results table, then per database the ratio, the targets, and how busy the machine was."""
    header = (
        f"{'database':<12} {'endpoint':<10} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7}"
    )
    lines = [header, "-" * len(header)]
    for report in reports:
        for name in (PURCHASES, REFERENCE):
            f = report.endpoints[name]
            lines.append(
                f"{report.database:<12} {name:<10} {f.requests:>9,} {f.errors:>7,} {f.rate:>8.1f} "
                f"{f.p50_ms:>7.1f} {f.p99_ms:>7.1f}"
            )
    lines.append("")
    for report in reports:
        purchases = report.endpoints[PURCHASES]
        lines.append(
            f"{report.database}: purchases/s / reference/s = {report.ratio:.2f} "
            f"(target >= {TARGET_RATIO}: {_mark(report.ratio_met)}); purchase p99 {purchases.p99_ms:.1f} ms "
            f"(target < {TARGET_P99_MS:.0f} ms: {_mark(report.p99_met)})"
        )
    lines.append("")
    for report in reports:
        lines.append(f"{report.database}: {report.version}; {report.settings}")
        lines.append(f"  server: {report.server}; {report.clients} clients over {report.cards:,} cards")
        for name in (PURCHASES, REFERENCE):
            f = report.endpoints[name]
            lines.append(
                f"  {name}: {f.seconds:.1f} s measured after {f.warmup_requests:,} warm-up requests; "
                f"max {f.max_ms:.1f} ms; load generator used {f.client_cores:.2f} cores"
            )
            if f.machine_busy is not None and f.server_cpu_ms is not None and f.other_cpu_ms is not None:
                lines.append(
                    f"    CPU per request: app {f.server_cpu_ms:.2f} ms, database and kernel "
                    f"{f.other_cpu_ms:.2f} ms, load generator {f.client_cpu_ms:.2f} ms; "
                    f"all CPUs {f.machine_busy:.0%} busy"
                )
            lines.extend(f"    error: {sample}" for sample in f.error_samples)
        lines.append(f"  ledger check: {report.ledger_output.strip() or '(no output)'}")
    return "\n".join(lines)

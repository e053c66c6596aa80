"""What one bench run does: the knobs of ``python -m bench``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PARTS = (
    "healthz",
    "pay",
    "add-funds",
    "verify",
    "fairness",
    "pipeline",
    "bridges",
    "drain",
    "rss",
    "bus-memory",
)
DATABASES = ("sqlite", "postgres")
RESULTS = Path(__file__).with_name("results")
PG_ADMIN_URL = os.environ.get("VOLTPAY_BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@dataclass
class BenchConfig:
    quick: bool = False
    duration: int = 10  # seconds of each measured wrk run
    warmup: int = 2  # seconds of wrk before each measured run (same load, not counted)
    connections: list[int] = field(default_factory=lambda: [1, 16, 64])
    rounds: int = 3  # rounds of each voltpay/ceiling pair at the highest connection level
    only: frozenset[str] = frozenset(PARTS)
    databases: list[str] = field(default_factory=lambda: list(DATABASES))
    users: int = 2000
    wrk_threads: int = 1
    # Payments per pipeline round on the embedded endpoint: about 2 s of the
    # bus at its speed since moto has had a process of its own (1,000-1,260
    # events/s), so that events/s measures the pipeline's throughput. At 500,
    # a round lasted 0.4 s, and the fixed time from the first commit to the
    # first SMS weighed as much as the rate (bench/results/2026-12-07-pipeline.md).
    pipeline_events: int = 2000
    pipeline_rounds: int = 3
    # Events waiting at once for the depth figure: its rate with the second
    # against its rate with the first (once, on the drain database).
    depth_events: tuple[int, int] = (1000, 10000)
    bus_memory_events: int = 20000  # events through the embedded bus for its RSS figure
    bus_memory_warm_up: int = 2000
    stub_events: int = 5000  # events per bridges round against the instant stub
    drain_rounds: int = 2
    # The drain figure needs a load the pipeline keeps up with when there is
    # no backlog: otherwise it is draining in both windows and the drop says
    # nothing. At the top level (64) it never kept up on a 2-core machine; at
    # 4 connections the API is still busy (200-400 pay req/s) and it does.
    drain_connections: int = 4
    rss_seconds: int = 300
    # The quiet user's pay-then-read pairs a second, beside the flood's wrk
    # connections; the flooder's bills paid (and as many pending) beforehand.
    fairness_rate: float = 10.0
    fairness_connections: int = 64
    fairness_history: int = 30
    pg_admin_url: str = PG_ADMIN_URL
    out_dir: Path = RESULTS
    profile: bool = False
    http_aws: str = "stub"  # the daemon's SNS/SQS endpoint for the HTTP measurements
    keep_workdir: bool = False

    @property
    def top_connections(self) -> int:
        return max(self.connections)

    def rounds_at(self, connections: int) -> int:
        """All rounds at the highest level, one elsewhere (to keep the run short)."""
        return self.rounds if connections == self.top_connections else 1

    def wants(self, part: str) -> bool:
        return part in self.only

    @property
    def drain_database(self) -> str:
        """Drain and RSS run once, on PostgreSQL when it is measured."""
        return "postgres" if "postgres" in self.databases else self.databases[0]

    @classmethod
    def quick_defaults(cls) -> BenchConfig:
        return cls(
            quick=True,
            duration=2,
            warmup=1,
            connections=[16],
            rounds=1,
            users=200,
            pipeline_events=50,
            pipeline_rounds=1,
            depth_events=(50, 500),
            stub_events=500,
            drain_rounds=1,
            rss_seconds=5,
            bus_memory_events=400,
            bus_memory_warm_up=100,
            fairness_connections=8,
            fairness_history=5,
        )

"""From samples to the figures that matter: medians, ratios, targets, files.

A ratio of voltpay to its ceiling is the median of the rounds' ratios, each
taken from one round's pair, run back to back (and in alternating order, see
``bench.runner``). These machines change speed over minutes, by more than the
differences measured (a run on 2026-11-29 saw the bare aiohttp app go from
14,200 to 20,300 req/s over three rounds): a pair run back to back meets the
same machine, while the ratio of the two sides' medians can set one round's
voltpay against another round's ceiling. The ratio of medians is reported
beside it (``*_ratio_of_medians``). Pay on PostgreSQL is also set against
the FastAPI peer (``bench.ceilings.fastapi_peer``), the same way: voltpay/peer
is the median of the rounds' ratios.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.fairness import FLOODS
from bench.runner import Results
from bench.stats import median, paired_ratios, ratio

FAIR_P50 = "a quiet user's pay p50 during another user's flood vs alone"
FAIR_P99 = "a quiet user's pay p99 during another user's flood vs alone"
# The targets: key, comparison, bound, what it means.
TARGETS: tuple[tuple[str, str, float, str], ...] = (
    ("pay_pg_ratio", ">=", 0.6, "pay on PostgreSQL vs the database ceiling (req/s)"),
    ("pay_pg_p99_ms", "<", 100.0, "pay on PostgreSQL, p99 at the top connection level"),
    (
        "pay_pg_vs_fastapi",
        ">=",
        3.5,
        "pay on PostgreSQL vs the same payment in FastAPI + SQLAlchemy 2 async (req/s)",
    ),
    ("pay_sqlite_ratio", ">=", 0.6, "pay on SQLite vs its database ceiling (req/s)"),
    ("healthz_ratio", ">=", 0.8, "GET /healthz vs the bare aiohttp app (req/s)"),
    ("pipeline_ratio", ">=", 0.8, "events/s vs raw aioboto3 on the embedded endpoint"),
    ("sms_p99_ratio", "<=", 1.5, "commit→SMS p99 vs the ceiling's publish→receive p99"),
    ("pipeline_vs_pay_sqlite", ">=", 1.0, "commit→SMS events/s vs pay req/s, on SQLite"),
    ("pipeline_vs_pay_pg", ">=", 0.8, "commit→SMS events/s vs pay req/s, on PostgreSQL"),
    (
        "sms_lag_after_pay_s_sqlite",
        "<=",
        1.0,
        "seconds after a pay round at the top level until its last SMS, on SQLite",
    ),
    (
        "sms_lag_after_pay_s_pg",
        "<=",
        1.0,
        "seconds after a pay round at the top level until its last SMS, on PostgreSQL",
    ),
    (
        "pipeline_depth_10k_ratio",
        ">=",
        0.8,
        "pipeline events/s with 10,000 events waiting vs with 1,000",
    ),
    ("pipeline_instant_events_per_s", ">=", 1000.0, "voltpay's bridges vs the instant stub"),
    ("pay_drop_during_drain", "<", 0.2, "pay req/s lost while the pipeline drains a backlog"),
    ("rss_growth", "<", 0.1, "RSS growth over a steady pay load"),
    # A quiet user's pay beside another user's flood, against the same user
    # alone, in turns (the worse flood decides). The flood's admitted share
    # and its refusals still run on the daemon's one event loop and the
    # machine's CPUs, so some wait is the price of serving it at all: twice
    # the usual median is still "close to its usual latency"; the p99 of a
    # window's 100 pays is nearly its worst, and gets three times.
    ("fairness_quiet_p50_ratio_pg", "<=", 2.0, FAIR_P50),
    ("fairness_quiet_p99_ratio_pg", "<=", 3.0, FAIR_P99),
    ("fairness_quiet_p50_ratio_sqlite", "<=", 2.0, FAIR_P50),
    ("fairness_quiet_p99_ratio_sqlite", "<=", 3.0, FAIR_P99),
    ("fairness_quiet_failures", "<=", 0.0, "the quiet user's requests refused during floods"),
)
# The share of a window's payments still waiting in the pipeline at its end
# above which the pipeline did not keep up without a backlog.
DRAIN_KEEPS_UP = 0.1
# What latest.json always holds (null only for a part left out with --only).
REQUIRED_KEYS = (
    "pay_pg_ratio",
    "pay_pg_p99_ms",
    "pay_pg_vs_fastapi",
    "pay_sqlite_ratio",
    "healthz_ratio",
    "pipeline_ratio",
    "pipeline_instant_events_per_s",
    "pipeline_vs_pay_sqlite",
    "pipeline_vs_pay_pg",
    "sms_lag_after_pay_s_sqlite",
    "sms_lag_after_pay_s_pg",
    "pipeline_depth_10k_ratio",
    "pay_drop_during_drain",
    "rss_growth",
    "fairness_quiet_p50_ratio_pg",
    "fairness_quiet_p99_ratio_pg",
    "fairness_quiet_p50_ratio_sqlite",
    "fairness_quiet_p99_ratio_sqlite",
    "fairness_quiet_failures",
)


@dataclass(frozen=True)
class HttpRow:
    part: str
    database: str
    connections: int
    rounds: int
    voltpay_rps: float | None
    voltpay_p50_ms: float | None
    voltpay_p99_ms: float | None
    ceiling_rps: float | None
    ceiling_p50_ms: float | None
    ceiling_p99_ms: float | None
    errors: int
    round_ratios: tuple[float, ...] = ()  # voltpay/ceiling req/s, round by round
    # voltpay's rounds: seconds after each until all its events were texted
    caught_up_s: float | None = None
    # The FastAPI peer, where it ran (pay on PostgreSQL).
    peer_rps: float | None = None
    peer_p50_ms: float | None = None
    peer_p99_ms: float | None = None
    peer_round_ratios: tuple[float, ...] = ()  # voltpay/peer req/s, round by round

    @property
    def ratio(self) -> float | None:
        """The median of the rounds' ratios."""
        return median(self.round_ratios)

    @property
    def ratio_of_medians(self) -> float | None:
        return ratio(self.voltpay_rps, self.ceiling_rps)

    @property
    def peer_ratio(self) -> float | None:
        """voltpay/peer: the median of the rounds' ratios."""
        return median(self.peer_round_ratios)

    @property
    def peer_ratio_of_medians(self) -> float | None:
        return ratio(self.voltpay_rps, self.peer_rps)


def http_rows(results: Results) -> list[HttpRow]:
    keys: list[tuple[str, str, int]] = []
    for s in results.http:
        key = (s.part, s.database, s.connections)
        if key not in keys:
            keys.append(key)
    rows = []
    for part, database, connections in keys:
        group = [
            s
            for s in results.http
            if (s.part, s.database, s.connections) == (part, database, connections)
        ]
        mine = [s for s in group if s.system == "voltpay"]
        theirs = [s for s in group if s.system == "ceiling"]
        peers = [s for s in group if s.system == "peer"]
        by_round = {s.round: s.rps for s in mine}
        rows.append(
            HttpRow(
                part,
                database,
                connections,
                max(len(mine), len(theirs), len(peers)),
                median(s.rps for s in mine),
                median(s.p50_ms for s in mine),
                median(s.p99_ms for s in mine),
                median(s.rps for s in theirs),
                median(s.p50_ms for s in theirs),
                median(s.p99_ms for s in theirs),
                sum(s.errors for s in group),
                tuple(paired_ratios(by_round, {s.round: s.rps for s in theirs})),
                median(s.caught_up_s for s in mine if s.caught_up_s is not None),
                median(s.rps for s in peers),
                median(s.p50_ms for s in peers),
                median(s.p99_ms for s in peers),
                tuple(paired_ratios(by_round, {s.round: s.rps for s in peers})),
            )
        )
    return rows


def _pipeline_rounds(results: Results, kind: str, database: str, field: str) -> dict[int, float]:
    return {
        s.round: getattr(s, field)
        for s in results.pipeline
        if s.kind == kind and s.database == database
    }


def _pipeline(results: Results, kind: str, database: str, field: str) -> float | None:
    return median(_pipeline_rounds(results, kind, database, field).values())


def _paired(results: Results, kind: str, against: str, database: str, field: str) -> float | None:
    """The median of the rounds' ratios of ``kind`` to ``against``."""
    return median(
        paired_ratios(
            _pipeline_rounds(results, kind, database, field),
            _pipeline_rounds(results, against, database, field),
        )
    )


def summary(results: Results) -> dict[str, Any]:
    """The headline figures (None where a part was not run)."""
    config = results.config
    top = config.top_connections
    rows = {(r.part, r.database, r.connections): r for r in http_rows(results)}
    out: dict[str, Any] = {}

    def http(prefix: str, part: str, database: str) -> None:
        row = rows.get((part, database, top))
        out[f"{prefix}_rps"] = row.voltpay_rps if row else None
        out[f"{prefix}_p50_ms"] = row.voltpay_p50_ms if row else None
        out[f"{prefix}_p99_ms"] = row.voltpay_p99_ms if row else None
        if part in ("pay", "healthz"):
            out[f"{prefix}_ceiling_rps"] = row.ceiling_rps if row else None
            out[f"{prefix}_ceiling_p99_ms"] = row.ceiling_p99_ms if row else None
            out[f"{prefix}_ratio"] = row.ratio if row else None
            out[f"{prefix}_ratio_of_medians"] = row.ratio_of_medians if row else None
            out[f"{prefix}_round_ratios"] = list(row.round_ratios) if row else None

    http("healthz", "healthz", "-")
    pay_pg = rows.get(("pay", "postgres", top))
    out["pay_pg_peer_rps"] = pay_pg.peer_rps if pay_pg else None
    out["pay_pg_peer_p50_ms"] = pay_pg.peer_p50_ms if pay_pg else None
    out["pay_pg_peer_p99_ms"] = pay_pg.peer_p99_ms if pay_pg else None
    out["pay_pg_vs_fastapi"] = pay_pg.peer_ratio if pay_pg else None
    out["pay_pg_vs_fastapi_ratio_of_medians"] = pay_pg.peer_ratio_of_medians if pay_pg else None
    out["pay_pg_vs_fastapi_round_ratios"] = list(pay_pg.peer_round_ratios) if pay_pg else None
    for database, short in (("postgres", "pg"), ("sqlite", "sqlite")):
        http(f"pay_{short}", "pay", database)
        http(f"add_funds_{short}", "add-funds", database)
        http(f"verify_{short}", "verify", database)

    pipeline_ratios, latency_ratios = [], []
    for database, short in (("postgres", "pg"), ("sqlite", "sqlite")):
        mine = _pipeline(results, "voltpay-embedded", database, "events_per_s")
        theirs = _pipeline(results, "ceiling-embedded", database, "events_per_s")
        mine_p99 = _pipeline(results, "voltpay-embedded", database, "p99_ms")
        theirs_p99 = _pipeline(results, "ceiling-embedded", database, "p99_ms")
        out[f"pipeline_{short}_events_per_s"] = mine
        out[f"pipeline_{short}_ceiling_events_per_s"] = theirs
        out[f"pipeline_{short}_ratio"] = _paired(
            results, "voltpay-embedded", "ceiling-embedded", database, "events_per_s"
        )
        out[f"pipeline_{short}_ratio_of_medians"] = ratio(mine, theirs)
        out[f"commit_to_sms_{short}_p50_ms"] = _pipeline(
            results, "voltpay-embedded", database, "p50_ms"
        )
        out[f"commit_to_sms_{short}_p99_ms"] = mine_p99
        out[f"ceiling_publish_to_receive_{short}_p99_ms"] = theirs_p99
        out[f"sms_p99_{short}_ratio"] = _paired(
            results, "voltpay-embedded", "ceiling-embedded", database, "p99_ms"
        )
        out[f"sms_p99_{short}_ratio_of_medians"] = ratio(mine_p99, theirs_p99)
        out[f"pipeline_stub_daemon_{short}_events_per_s"] = _pipeline(
            results, "voltpay-stub", database, "events_per_s"
        )
        out[f"commit_to_sms_stub_daemon_{short}_p99_ms"] = _pipeline(
            results, "voltpay-stub", database, "p99_ms"
        )
        if out[f"pipeline_{short}_ratio"] is not None:
            pipeline_ratios.append(out[f"pipeline_{short}_ratio"])
        if out[f"sms_p99_{short}_ratio"] is not None:
            latency_ratios.append(out[f"sms_p99_{short}_ratio"])
        # The pipeline against the API: its events/s over the pay rate at the
        # top level, and how long after a pay round its last SMS went.
        pay = rows.get(("pay", database, top))
        out[f"pipeline_vs_pay_{short}"] = ratio(mine, pay.voltpay_rps if pay else None)
        out[f"sms_lag_after_pay_s_{short}"] = pay.caught_up_s if pay else None
    shallow = _pipeline(results, "voltpay-shallow", config.drain_database, "events_per_s")
    deep = _pipeline(results, "voltpay-deep", config.drain_database, "events_per_s")
    out["pipeline_shallow_events_per_s"] = shallow
    out["pipeline_deep_events_per_s"] = deep
    out["pipeline_depth_10k_ratio"] = ratio(deep, shallow)
    # The worse database decides.
    out["pipeline_ratio"] = min(pipeline_ratios) if pipeline_ratios else None
    out["sms_p99_ratio"] = max(latency_ratios) if latency_ratios else None
    out["pipeline_instant_events_per_s"] = _pipeline(results, "bridges-stub", "-", "events_per_s")
    out["pipeline_instant_raw_events_per_s"] = _pipeline(results, "raw-stub", "-", "events_per_s")

    idle_rounds = {s.round: s.rps for s in results.drain if s.state == "idle"}
    draining_rounds = {s.round: s.rps for s in results.drain if s.state == "draining"}
    idle = median(idle_rounds.values())
    draining = median(draining_rounds.values())
    out["pay_rate_idle"] = idle
    out["pay_rate_draining"] = draining
    kept_median = median(paired_ratios(draining_rounds, idle_rounds))
    out["pay_drop_during_drain"] = 1 - kept_median if kept_median is not None else None
    out["pay_drop_during_drain_of_medians"] = (
        1 - draining / idle if idle and draining is not None else None
    )
    # Without a backlog the pipeline should keep up with the payments' own
    # events; when it does not, it is draining in both windows and the drop
    # says nothing.
    left = [
        s.waiting_after / max(1.0, s.rps * config.duration)
        for s in results.drain
        if s.state == "idle"
    ]
    out["pay_drop_during_drain_valid"] = bool(left) and max(left) <= DRAIN_KEEPS_UP
    out.update(fairness_figures(results))
    if results.rss:
        rss = results.rss[-1]
        out["rss_growth"] = (rss.end_kib - rss.start_kib) / rss.start_kib
        out["rss_start_mib"] = rss.start_kib / 1024
        out["rss_end_mib"] = rss.end_kib / 1024
        out["rss_seconds"] = rss.seconds
    else:
        out["rss_growth"] = None
    return out


def fairness_figures(results: Results) -> dict[str, Any]:
    """The quiet user's latency flooded/alone, each round's pair giving one
    ratio and the figure their median; the worse flood decides."""
    out: dict[str, Any] = {}
    failures = None
    for database, short in (("postgres", "pg"), ("sqlite", "sqlite")):
        worst: dict[str, list[float]] = {"p50": [], "p99": []}
        for flood in FLOODS:
            group = [s for s in results.fairness if (s.database, s.flood) == (database, flood)]
            alone = [s for s in group if s.state == "alone"]
            flooded = [s for s in group if s.state == "flooded"]
            name = f"fairness_{flood}_{short}"
            for which in ("p50", "p99"):
                field = f"pay_{which}_ms"
                value = median(
                    paired_ratios(
                        {s.round: getattr(s, field) for s in flooded},
                        {s.round: getattr(s, field) for s in alone},
                    )
                )
                out[f"{name}_quiet_{which}_ratio"] = value
                out[f"{name}_quiet_alone_{which}_ms"] = median(getattr(s, field) for s in alone)
                out[f"{name}_quiet_flooded_{which}_ms"] = median(getattr(s, field) for s in flooded)
                if value is not None:
                    worst[which].append(value)
            requests = sum(s.flood_requests for s in flooded)
            out[f"{name}_flood_rps"] = median(s.flood_rps for s in flooded)
            out[f"{name}_flood_429_share"] = (
                sum(s.flood_too_many for s in flooded) / requests if requests else None
            )
            if flooded:
                failures = (failures or 0) + sum(s.quiet_failures for s in flooded)
        out[f"fairness_quiet_p50_ratio_{short}"] = max(worst["p50"], default=None)
        out[f"fairness_quiet_p99_ratio_{short}"] = max(worst["p99"], default=None)
    out["fairness_quiet_failures"] = failures
    return out


def targets(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    verdicts = {}
    for key, comparison, bound, meaning in TARGETS:
        value = figures.get(key)
        met = None
        if value is not None:
            met = {
                ">=": value >= bound,
                "<": value < bound,
                "<=": value <= bound,
            }[comparison]
        if key == "pay_drop_during_drain" and met and not figures.get(f"{key}_valid"):
            met = None
            meaning += (
                " - inconclusive: without a backlog the pipeline did not keep up with the "
                "payments' own events, so it was draining in both windows"
            )
        verdicts[key] = {
            "value": value,
            "target": f"{comparison} {bound:g}",
            "met": met,
            "what": meaning,
        }
    return verdicts


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _by_round(ratios: tuple[float, ...]) -> str:
    return ", ".join(_fmt(x, 2) for x in ratios) or "-"


def http_table(results: Results) -> list[str]:
    lines = [
        "| part | database | conns | rounds | voltpay req/s | p50 ms | p99 ms "
        "| ceiling req/s | p50 ms | p99 ms | voltpay/ceiling | by round "
        "| peer req/s | p99 ms | voltpay/peer | by round | errors | SMS caught up s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in http_rows(results):
        lines.append(
            f"| {r.part} | {r.database} | {r.connections} | {r.rounds} "
            f"| {_fmt(r.voltpay_rps)} | {_fmt(r.voltpay_p50_ms, 2)} | {_fmt(r.voltpay_p99_ms, 2)} "
            f"| {_fmt(r.ceiling_rps)} | {_fmt(r.ceiling_p50_ms, 2)} | {_fmt(r.ceiling_p99_ms, 2)} "
            f"| {_fmt(r.ratio, 2)} | {_by_round(r.round_ratios)} "
            f"| {_fmt(r.peer_rps)} | {_fmt(r.peer_p99_ms, 2)} "
            f"| {_fmt(r.peer_ratio, 2)} | {_by_round(r.peer_round_ratios)} "
            f"| {r.errors} | {_fmt(r.caught_up_s)} |"
        )
    return lines


def pipeline_table(results: Results) -> list[str]:
    lines = [
        "| what | database | rounds | events | delivered | seconds | events/s | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups: list[tuple[str, str]] = []
    for s in results.pipeline:
        if (s.kind, s.database) not in groups:
            groups.append((s.kind, s.database))
    for kind, database in groups:
        group = [s for s in results.pipeline if (s.kind, s.database) == (kind, database)]
        lines.append(
            f"| {kind} | {database} | {len(group)} | {group[0].events} "
            f"| {min(s.delivered for s in group)} | {_fmt(median(s.seconds for s in group), 2)} "
            f"| {_fmt(median(s.events_per_s for s in group))} "
            f"| {_fmt(median(s.p50_ms for s in group))} | {_fmt(median(s.p99_ms for s in group))} |"
        )
    return lines


def calls_lines(results: Results) -> list[str]:
    """SNS/SQS calls per event made by the daemon, counted by the stub."""
    lines = []
    for database in ("sqlite", "postgres"):
        group = [
            s.calls_per_event
            for s in results.pipeline
            if s.kind == "voltpay-stub" and s.database == database and s.calls_per_event
        ]
        if not group:
            continue
        names = sorted({name for calls in group for name in calls})
        shown = ", ".join(
            f"{name} {_fmt(median(calls.get(name, 0.0) for calls in group), 2)}" for name in names
        )
        lines.append(f"- voltpay-stub, {database}: SNS/SQS calls per event: {shown}")
    return [*lines, ""] if lines else []


def drain_table(results: Results) -> list[str]:
    lines = [
        "| state | round | pay req/s | p99 ms | backlog | SMS during window | waiting after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results.drain:
        lines.append(
            f"| {s.state} | {s.round + 1} | {_fmt(s.rps)} | {_fmt(s.p99_ms, 2)} | {s.backlog} "
            f"| {s.delivered_during} | {s.waiting_after} |"
        )
    return lines


def fairness_table(results: Results) -> list[str]:
    lines = [
        "| flood | database | state | round | quiet pays | pay p50 ms | pay p99 ms | pay max ms "
        "| read p50 ms | quiet failures | flood req/s | flood 429 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results.fairness:
        flooded = s.state == "flooded"
        lines.append(
            f"| {s.flood} | {s.database} | {s.state} | {s.round + 1} | {s.pays} "
            f"| {_fmt(s.pay_p50_ms, 2)} | {_fmt(s.pay_p99_ms, 2)} | {_fmt(s.pay_max_ms, 2)} "
            f"| {_fmt(s.get_p50_ms, 2)} | {s.quiet_failures} "
            f"| {_fmt(s.flood_rps) if flooded else '-'} "
            f"| {f'{s.flood_too_many} of {s.flood_requests}' if flooded else '-'} |"
        )
    return lines


def target_table(verdicts: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| target | value | wanted | met |", "|---|---:|---|---|"]
    for key, v in verdicts.items():
        value = v["value"]
        shown = "-" if value is None else f"{value:,.3f}"
        met = {True: "yes", False: "**no**", None: "not run"}[v["met"]]
        if v["met"] is None and value is not None:
            met = "inconclusive"
        lines.append(f"| {key}: {v['what']} | {shown} | {v['target']} | {met} |")
    return lines


def steal_lines(results: Results) -> list[str]:
    """How much CPU the hypervisor took from this machine while wrk ran."""
    shares = [s.steal for s in results.http if s.steal is not None]
    if not shares:
        return []
    top = [
        s.steal
        for s in results.http
        if s.steal is not None and s.connections == results.config.top_connections
    ]
    worst = max(top or shares)
    where = f" at {results.config.top_connections} connections" if top else ""
    return [
        f"- stolen CPU time (the hypervisor running other guests) while wrk ran: median "
        f"{100 * (median(shares) or 0.0):.1f}%, at most {100 * worst:.1f}%{where}"
        + (
            "; rounds with much of it make their pair's ratio less reliable"
            if worst >= 0.05
            else ""
        )
    ]


def markdown(results: Results, figures: dict[str, Any]) -> str:
    config = results.config
    machine = _machine()
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(results.started_at))
    minutes = (results.finished_at - results.started_at) / 60
    out = [
        f"# voltpay bench, {started} on {machine['host']}",
        "",
        f"- machine: {machine['cpus']} CPUs ({machine['cpu_model']}), Python {machine['python']}",
        f"- voltpay source digest: {results.source_at_start}"
        + (
            f" (then {results.source_at_end})"
            if results.source_at_end != results.source_at_start
            else ""
        ),
        f"- run: {minutes:.1f} min; {'quick' if config.quick else 'full'} mode; "
        f"{config.duration} s per measurement after {config.warmup} s of warm-up; connections "
        f"{', '.join(map(str, config.connections))}; {config.rounds} rounds (voltpay and ceiling "
        "in turns, and for pay on PostgreSQL the FastAPI peer, the order reversed from round "
        "to round; a ratio is the median of the rounds' ratios, other figures medians) at "
        f"{config.top_connections} connections, one round elsewhere; "
        f"{config.users} users; wrk with {config.wrk_threads} thread(s)",
        f"- voltpay: `voltpay run` with VOLTPAY_LOG__LEVEL=WARNING; for the HTTP figures its "
        f"SNS/SQS endpoint is {'the instant stub' if config.http_aws == 'stub' else 'embedded'} "
        "(every pay still publishes its event and the daemon still delivers the SMS); the "
        "pipeline figures use the default embedded endpoint",
        *steal_lines(results),
        "",
        "## Targets",
        "",
        *target_table(targets(figures)),
        "",
        "## HTTP",
        "",
        "SMS caught up s: after each of voltpay's rounds (median), the seconds until every "
        "event the round committed was texted. While requests wait for its CPU, voltpay's "
        "outbox relay yields to them (`VOLTPAY_AGENTS__YIELD_IN_FLIGHT`) and its events "
        "go after the round; the next round, of either side, starts only once they have.",
        "",
        "peer (pay on PostgreSQL): the same payment as a new user writes it with FastAPI and "
        "SQLAlchemy 2 async (asyncpg, one AsyncSession per request, ORM models on voltpay's "
        "tables, a pool of voltpay's size), served by uvicorn with one worker "
        "(`bench/ceilings/fastapi_peer.py`).",
        "",
        *http_table(results),
        "",
        "## Event pipeline",
        "",
        "voltpay-embedded: N payments through `voltpay run` on its embedded endpoint, commit "
        "(outbox created_at) → SMS recorded (notification sent_at). ceiling-embedded: raw "
        "aioboto3 PublishBatch(10) → ReceiveMessage(10) → DeleteMessageBatch against moto's "
        "server started the same way in its own process, publish → receive. voltpay-stub: the "
        "same N-payments figure with the daemon on the instant stub. bridges-stub / raw-stub: "
        "voltpay's SnsPublisher/SqsConsumer and raw aioboto3 against the instant stub.",
        "",
        *pipeline_table(results),
        "",
        *calls_lines(results),
    ]
    if results.drain:
        out += [
            f"## Pay while the pipeline drains ({config.drain_connections} connections, "
            f"{config.drain_database})",
            "",
            *drain_table(results),
            "",
        ]
    if results.fairness:
        out += [
            f"## A quiet user beside another user's flood ({config.fairness_connections} "
            "connections)",
            "",
            f"The quiet user pays one of its bills and reads it back, {config.fairness_rate:g} "
            "times a second on one connection; alone and while another user floods with wrk "
            "(lists: GET /api/bills and GET /api/wallets/{id}/transactions in turn; verify: "
            "POST /api/electricity/verify), in turns, which goes first alternating.",
            "",
            *fairness_table(results),
            "",
        ]
    for rss in results.rss:
        trace = ", ".join(f"{t:g}s {kib / 1024:.1f}" for t, kib in rss.trace)
        out += [
            f"## RSS ({rss.database}, {rss.seconds} s of pay at {rss.connections} connections, "
            f"{rss.rps:.0f} req/s)",
            "",
            f"{rss.start_kib / 1024:.1f} MiB after warm-up → {rss.end_kib / 1024:.1f} MiB "
            f"({100 * (rss.end_kib - rss.start_kib) / rss.start_kib:+.1f}%). Trace (MiB): {trace}",
            "",
        ]
    if results.profiles:
        out += ["## Profiles", ""]
        out += [f"- {name}: `{path}`" for name, path in results.profiles.items()]
        out.append("")
    if results.notes:
        out += ["## Notes", "", *[f"- {note}" for note in results.notes], ""]
    return "\n".join(out)


def write(results: Results) -> tuple[Path, Path, dict[str, Any]]:
    config = results.config
    figures = summary(results)
    folder = config.out_dir
    folder.mkdir(parents=True, exist_ok=True)
    machine = _machine()
    stamp = time.strftime("%Y-%m-%d", time.localtime(results.started_at))
    md_path = folder / f"{stamp}-{machine['host']}.md"
    md_path.write_text(markdown(results, figures))
    document = {
        **figures,
        "targets": targets(figures),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(results.started_at)),
        "machine": machine,
        "config": {
            key: (sorted(value) if isinstance(value, frozenset) else value)
            for key, value in asdict(config).items()
            if key != "out_dir"
        },
        "minutes": (results.finished_at - results.started_at) / 60,
        "voltpay_source": {"start": results.source_at_start, "end": results.source_at_end},
        "notes": results.notes,
        "profiles": results.profiles,
        "samples": results.samples(),
    }
    json_path = folder / "latest.json"
    json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return md_path, json_path, figures


def console(results: Results, figures: dict[str, Any]) -> str:
    lines = [
        "",
        "HTTP (medians; voltpay/ceiling and voltpay/peer: the median of the rounds' ratios)",
        *http_table(results),
        "",
        "Pipeline",
        *pipeline_table(results),
    ]
    if results.drain:
        lines += ["", "Pay while draining", *drain_table(results)]
    if results.fairness:
        lines += ["", "A quiet user beside a flood", *fairness_table(results)]
    lines += ["", "Targets", *target_table(targets(figures)), ""]
    return "\n".join(lines)

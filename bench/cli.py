"""``python -m bench``: the command line."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.config import DATABASES, PARTS, BenchConfig
from bench.wrk import WrkMissing, find_wrk

EXIT_MISSING_TOOL = 2


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark voltpay against its ceilings; write bench/results/.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run: tiny durations, 16 connections, short RSS window",
    )
    parser.add_argument("--duration", type=int, help="seconds per measurement (default 10)")
    parser.add_argument("--warmup", type=int, help="warm-up seconds before each (default 2)")
    parser.add_argument("--connections", help="connection levels, e.g. 1,16,64 (the default)")
    parser.add_argument(
        "--rounds", type=int, help="rounds per voltpay/ceiling pair at the top level (default 3)"
    )
    parser.add_argument("--only", help=f"parts to run, from: {','.join(PARTS)}")
    parser.add_argument("--databases", help="sqlite,postgres (the default) or one of them")
    parser.add_argument("--users", type=int, help="bench users (default 2000)")
    parser.add_argument(
        "--rss-seconds", type=int, help="steady pay load for the RSS figure (default 300)"
    )
    parser.add_argument(
        "--pipeline-events",
        type=int,
        help="payments per pipeline round on the embedded endpoint (default 2000)",
    )
    parser.add_argument("--pipeline-rounds", type=int, help="pipeline rounds (default 3)")
    parser.add_argument(
        "--stub-events",
        type=int,
        help="events per bridges round against the instant stub (default 5000)",
    )
    parser.add_argument("--drain-rounds", type=int, help="idle/draining pairs (default 2)")
    parser.add_argument(
        "--drain-connections",
        type=int,
        help="connections for the drain figure (default 4: a load the pipeline keeps up with)",
    )
    parser.add_argument("--wrk-threads", type=int, help="wrk threads (default 1)")
    parser.add_argument(
        "--http-aws",
        choices=("stub", "embedded"),
        help="voltpay's SNS/SQS endpoint during the HTTP figures (default stub)",
    )
    parser.add_argument("--pg-admin-url", help="PostgreSQL URL used to create/drop the bench DB")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also record py-spy profiles of pay (PostgreSQL) and the pipeline",
    )
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep logs, SQLite file and data files"
    )
    return parser


def config_from(args: argparse.Namespace) -> BenchConfig:
    config = BenchConfig.quick_defaults() if args.quick else BenchConfig()
    simple = {
        "duration": args.duration,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "users": args.users,
        "rss_seconds": args.rss_seconds,
        "pipeline_events": args.pipeline_events,
        "pipeline_rounds": args.pipeline_rounds,
        "stub_events": args.stub_events,
        "drain_rounds": args.drain_rounds,
        "drain_connections": args.drain_connections,
        "wrk_threads": args.wrk_threads,
        "http_aws": args.http_aws,
        "pg_admin_url": args.pg_admin_url,
        "out_dir": args.out,
    }
    for name, value in simple.items():
        if value is not None:
            setattr(config, name, value)
    if args.connections:
        config.connections = sorted({int(c) for c in _csv(args.connections)})
    if args.only:
        unknown = set(_csv(args.only)) - set(PARTS)
        if unknown:
            raise SystemExit(f"--only: unknown part(s) {', '.join(sorted(unknown))}")
        config.only = frozenset(_csv(args.only))
    if args.databases:
        chosen = _csv(args.databases)
        if set(chosen) - set(DATABASES) or not chosen:
            raise SystemExit(f"--databases: choose from {', '.join(DATABASES)}")
        config.databases = [d for d in DATABASES if d in chosen]
    config.profile = args.profile
    config.keep_workdir = args.keep_workdir
    if config.duration < 1 or config.warmup < 0 or min(config.connections) < 1:
        raise SystemExit("durations must be whole seconds >= 1 and connections >= 1")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = config_from(args)
    try:
        find_wrk()
    except WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_MISSING_TOOL
    from bench import report, runner

    # A SIGTERM (a CI timeout, kill) stops the run like Ctrl-C: the processes
    # it started are stopped and the bench database is dropped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        results = asyncio.run(runner.run(config))
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    md_path, json_path, figures = report.write(results)
    print(report.console(results, figures))
    print(f"wrote {md_path} and {json_path}")
    return 0

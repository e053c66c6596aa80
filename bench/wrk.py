"""Driving HTTP load with wrk (a separate process) and reading its report."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.procs import die_with_parent, machine_ticks, marked_report, steal_share

LUA = Path(__file__).with_name("lua")
INSTALL_HINT = "apt-get update && apt-get install -y wrk"


class WrkMissing(RuntimeError):
    pass


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing(f"wrk is not installed; install it with: {INSTALL_HINT}")
    return path


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors, timeouts and answers >= 400
    wrapped: int  # times a thread ran out of data lines
    steal: float | None = None  # the share of the machine's CPU time stolen meanwhile
    too_many: int = 0  # answers 429, counted only when asked for (``statuses``)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


async def run_wrk(
    url: str,
    *,
    connections: int,
    duration: int,
    threads: int = 1,
    mode: str | None = None,
    data_file: Path | None = None,
    timeout_seconds: int = 10,
    statuses: bool = False,
) -> WrkResult:
    """One wrk run; ``mode`` and ``data_file`` select the API script, which
    with ``statuses`` also counts the answers 429."""
    threads = max(1, min(threads, connections))
    argv = [
        find_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, duration)}s",
        f"--timeout={timeout_seconds}s",
    ]
    if mode is None:
        argv += ["-s", str(LUA / "report.lua"), url]
    else:
        if data_file is None:
            raise ValueError("an API mode needs a data file")
        argv += ["-s", str(LUA / "api.lua"), url, "--", mode, str(data_file), str(threads)]
        if statuses:
            argv.append("statuses")
    ticks = machine_ticks()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    out, err = await process.communicate()
    steal = steal_share(ticks, machine_ticks())
    text = out.decode(errors="replace")
    raw = marked_report(text)
    if raw is None:
        raise RuntimeError(
            f"wrk gave no report (exit {process.returncode}): {text[-800:]}"
            f"{err.decode(errors='replace')[-800:]}"
        )
    errors = sum(
        int(raw[key])
        for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        requests=int(raw["requests"]),
        seconds=int(raw["duration_us"]) / 1e6,
        p50_ms=int(raw["p50_us"]) / 1000,
        p90_ms=int(raw["p90_us"]) / 1000,
        p99_ms=int(raw["p99_us"]) / 1000,
        max_ms=int(raw["max_us"]) / 1000,
        errors=errors,
        wrapped=int(raw["wrapped"]),
        steal=steal,
        too_many=int(raw.get("too_many", 0)),
    )

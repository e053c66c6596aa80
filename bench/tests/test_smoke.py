"""The bench harness (``python -m bench``) runs end to end in its quick mode.

A part of the quick run only (SQLite, every part of the bench, the tiniest
durations) keeps this under a minute; the figures' values are not judged here,
only that each one the run measured is written as a number.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import REQUIRED_KEYS

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ONLY = {
    "pay_pg_ratio",
    "pay_pg_p99_ms",
    "pay_pg_vs_fastapi",
    "fairness_quiet_p50_ratio_pg",
    "fairness_quiet_p99_ratio_pg",
    "pipeline_vs_pay_pg",
    "sms_lag_after_pay_s_pg",
}


@pytest.mark.timeout(300)
def test_quick_bench_writes_the_figures(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install -y wrk): the bench drives load with it")
    out = tmp_path / "results"
    argv = [
        sys.executable, "-m", "bench", "--quick", "--databases", "sqlite",
        "--duration", "1", "--warmup", "0", "--users", "50", "--pipeline-events", "20",
        "--stub-events", "200", "--rss-seconds", "2", "--out", str(out),
    ]  # fmt: skip
    completed = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=280, check=False
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]

    document = json.loads((out / "latest.json").read_text())
    for key in REQUIRED_KEYS:
        assert key in document, key
        if key in POSTGRES_ONLY:
            assert document[key] is None  # PostgreSQL was not part of this run
            continue
        value = document[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
    assert document["targets"].keys() >= {"pay_sqlite_ratio", "rss_growth"}
    assert list(out.glob("*-*.md")), "the Markdown report is missing"
    assert "voltpay/ceiling" in completed.stdout

"""The deployment files agree with the code: the image runs the daemon as a
non-root user, the unit uses the daemon's sd_notify support, and every metric
the dashboard graphs is one the daemon exports."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from typing import Any

import pytest

from voltpay.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]

# Series name suffixes each metric type adds to its family name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
_METRIC_NAME = re.compile(r"\b(?:voltpay|process|python)_[a-z0-9_]+\b")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def resolve_args(text: str, instructions: list[tuple[str, str]]) -> str:
    defaults = dict(
        arguments.split("=", 1) for keyword, arguments in instructions if keyword == "ARG"
    )
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults.get(m[1] or m[2], m[0]), text)


def test_dockerfile_is_multi_stage_on_slim_python() -> None:
    instructions = dockerfile_instructions()
    froms = [arguments for keyword, arguments in instructions if keyword == "FROM"]

    assert len(froms) >= 2
    final_image = resolve_args(froms[-1], instructions).split()[0]
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", final_image), final_image


def test_dockerfile_runs_the_daemon_as_a_non_root_user() -> None:
    stage = final_stage(dockerfile_instructions())
    users = [arguments for keyword, arguments in stage if keyword == "USER"]

    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert ("CMD", '["python", "-m", "voltpay", "run"]') in stage


def test_dockerfile_serves_on_all_interfaces_with_state_in_a_volume() -> None:
    stage = final_stage(dockerfile_instructions())
    text = "\n".join(f"{keyword} {arguments}" for keyword, arguments in stage)

    assert "VOLTPAY_HTTP__HOST=0.0.0.0" in text
    assert "VOLTPAY_DATABASE__URL=sqlite:///var/lib/voltpay/" in text
    assert any(k == "VOLUME" and "/var/lib/voltpay" in a for k, a in stage)
    assert ("EXPOSE", "8080 9090") in stage
    assert ("STOPSIGNAL", "SIGTERM") in stage


def test_the_deployments_keep_metrics_and_agents_off_the_public_listener() -> None:
    stage = final_stage(dockerfile_instructions())
    text = "\n".join(f"{keyword} {arguments}" for keyword, arguments in stage)
    assert "VOLTPAY_OPS__PORT=9090" in text
    unit = (ROOT / "contrib" / "voltpay.service").read_text()
    assert re.search(r"^Environment=.*\bVOLTPAY_OPS__PORT=9090\b", unit, re.MULTILINE)


def test_dockerfile_sqlite_url_is_an_absolute_path_for_tortoise() -> None:
    from tortoise.backends.base.config_generator import expand_db_url

    [url] = re.findall(r"VOLTPAY_DATABASE__URL=(\S+)", (ROOT / "Dockerfile").read_text())

    assert expand_db_url(url)["credentials"]["file_path"] == "/var/lib/voltpay/voltpay.sqlite3"


def test_dockerfile_healthcheck_asks_healthz() -> None:
    stage = final_stage(dockerfile_instructions())
    [healthcheck] = [arguments for keyword, arguments in stage if keyword == "HEALTHCHECK"]

    assert "http://127.0.0.1:8080/healthz" in healthcheck
    assert "curl" not in healthcheck


def test_dockerignore_keeps_the_venv_and_tests_out_of_the_context() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }

    assert {".venv", ".git", "tests", "var", "bench"} <= patterns


@pytest.fixture(scope="module")
def service() -> configparser.SectionProxy:
    # systemd units repeat keys and use empty values: a lenient parser.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "contrib" / "voltpay.service")
    return parser["Service"]


def test_service_uses_sd_notify_and_the_watchdog(service: configparser.SectionProxy) -> None:
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecStart"].endswith("voltpay run")


def test_service_restarts_on_failure_but_not_on_bad_config(
    service: configparser.SectionProxy,
) -> None:
    assert service["Restart"] == "on-failure"
    assert "78" in service["RestartPreventExitStatus"].split()
    assert float(service["TimeoutStopSec"]) > 25


def test_service_runs_unprivileged_with_its_own_state(service: configparser.SectionProxy) -> None:
    assert service.get("DynamicUser") == "yes" or service.get("User") not in {None, "root"}
    assert service["StateDirectory"] == "voltpay"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    assert "sqlite:///var/lib/voltpay/" in service["Environment"]


def dashboard() -> dict[str, Any]:
    loaded = json.loads((ROOT / "contrib" / "grafana-dashboard.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    queries = [
        target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            queries.append(query.get("query", ""))
    return queries


def dashboard_metric_names() -> set[str]:
    return {
        name for query in dashboard_queries(dashboard()) for name in _METRIC_NAME.findall(query)
    }


def exported_series_names(metrics: Metrics) -> set[str]:
    return {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in _SUFFIXES[family.type]
    }


def test_dashboard_is_a_grafana_dashboard_with_a_prometheus_variable() -> None:
    board = dashboard()

    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_graphs_only_metrics_the_daemon_exports() -> None:
    exported = exported_series_names(Metrics())
    used = dashboard_metric_names()

    assert used, "no metric names found in the dashboard"
    assert used - exported == set()


def test_dashboard_covers_each_area_operators_watch() -> None:
    used = dashboard_metric_names()

    assert {
        "voltpay_http_requests_total",
        "voltpay_http_request_duration_seconds_bucket",
        "voltpay_agent_messages_processed_total",
        "voltpay_agent_failures_total",
        "voltpay_agent_mailbox_depth",
        "voltpay_agent_in_flight",
        "voltpay_outbox_waiting_rows",
        "voltpay_outbox_oldest_waiting_age_seconds",
        "voltpay_outbox_published_total",
        "voltpay_outbox_publish_failures_total",
        "voltpay_sqs_received_total",
        "voltpay_sqs_deleted_total",
        "voltpay_sqs_duplicates_skipped_total",
        "voltpay_sqs_dead_letter_messages",
        "voltpay_sms_sent_total",
        "voltpay_sms_failed_total",
    } <= used


def test_the_drift_check_would_catch_a_renamed_metric() -> None:
    exported = exported_series_names(Metrics())

    assert "voltpay_http_requests_total" in exported
    assert "voltpay_http_request_duration_seconds_bucket" in exported
    assert "voltpay_http_request_total" not in exported
    assert "voltpay_http_request_duration_seconds" not in exported

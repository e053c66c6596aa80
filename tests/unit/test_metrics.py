from __future__ import annotations

from datetime import datetime

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from voltpay import __version__
from voltpay.observability.metrics import Metrics

AGENT = {"agent": "bills"}


def label_names(metrics: Metrics, family_name: str) -> set[frozenset[str]]:
    return {
        frozenset(sample.labels) - {"le"}
        for family in metrics.registry.collect()
        if family.name == family_name
        for sample in family.samples
    }


def exposition_names(metrics: Metrics) -> set[str]:
    body, _ = metrics.render()
    return {
        sample.name
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_every_metric_is_exposed_under_its_prometheus_name() -> None:
    metrics = Metrics()
    metrics.agent("bills", capacity=10).succeeded(0.01)
    metrics.sms_sent.labels(sender="log").inc()
    metrics.sms_failed.labels(sender="log").inc()
    metrics.http_requests.labels(route="/healthz", method="GET", status="200").inc()
    metrics.http_duration.labels(route="/healthz", method="GET").observe(0.002)

    names = exposition_names(metrics)

    assert {
        "voltpay_agent_messages_processed_total",
        "voltpay_agent_failures_total",
        "voltpay_agent_handling_duration_seconds_bucket",
        "voltpay_agent_mailbox_depth",
        "voltpay_agent_mailbox_capacity",
        "voltpay_agent_in_flight",
        "voltpay_outbox_waiting_rows",
        "voltpay_outbox_oldest_waiting_age_seconds",
        "voltpay_outbox_published_total",
        "voltpay_outbox_publish_failures_total",
        "voltpay_sqs_received_total",
        "voltpay_sqs_deleted_total",
        "voltpay_sqs_duplicates_skipped_total",
        "voltpay_sqs_visibility_extensions_total",
        "voltpay_sqs_dead_letter_messages",
        "voltpay_sqs_dead_letter_oldest_age_seconds",
        "voltpay_sms_sent_total",
        "voltpay_sms_failed_total",
        "voltpay_http_requests_total",
        "voltpay_http_request_duration_seconds_bucket",
        "voltpay_http_request_duration_seconds_sum",
        "voltpay_http_request_duration_seconds_count",
        "voltpay_build_info",
    } <= names


def test_label_sets_are_bounded_and_carry_no_user_data() -> None:
    metrics = Metrics()
    metrics.agent("bills", capacity=10).failed(0.01, RuntimeError("boom"))
    metrics.events_rejected.labels(reason="forged").inc()
    metrics.sms_sent.labels(sender="twilio").inc()
    metrics.http_requests.labels(route="/api/Vend/{billId}/pay", method="POST", status="201").inc()
    metrics.http_duration.labels(route="/api/Vend/{billId}/pay", method="POST").observe(0.1)

    assert label_names(metrics, "voltpay_agent_messages_processed") == {frozenset({"agent"})}
    assert label_names(metrics, "voltpay_agent_failures") == {frozenset({"agent"})}
    assert label_names(metrics, "voltpay_agent_handling_duration_seconds") == {frozenset({"agent"})}
    assert label_names(metrics, "voltpay_sms_sent") == {frozenset({"sender"})}
    assert label_names(metrics, "voltpay_events_rejected") == {frozenset({"reason"})}
    assert label_names(metrics, "voltpay_http_requests") == {
        frozenset({"route", "method", "status"})
    }
    assert label_names(metrics, "voltpay_http_request_duration_seconds") == {
        frozenset({"route", "method"})
    }
    assert label_names(metrics, "voltpay_outbox_waiting_rows") == {frozenset()}
    with pytest.raises(ValueError):
        metrics.http_requests.labels(route="/x", method="GET", status="200", user_id="u1")


def test_build_info_names_the_version() -> None:
    assert Metrics().sample("voltpay_build_info", {"version": __version__}) == 1.0
    assert Metrics(version="9.9.9").sample("voltpay_build_info", {"version": "9.9.9"}) == 1.0


def test_agent_duration_buckets_span_half_a_millisecond_to_ten_seconds() -> None:
    metrics = Metrics()
    metrics.agent("bills", capacity=1).succeeded(0.0004)

    bucket = "voltpay_agent_handling_duration_seconds_bucket"
    assert metrics.sample(bucket, AGENT | {"le": "0.0005"}) == 1.0
    assert metrics.sample(bucket, AGENT | {"le": "10.0"}) == 1.0
    assert metrics.sample(bucket, AGENT | {"le": "+Inf"}) == 1.0


def test_two_instances_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.sqs_received.inc(3)

    assert first.sample("voltpay_sqs_received_total") == 3.0
    assert second.sample("voltpay_sqs_received_total") == 0.0


def test_render_returns_the_text_format_and_its_content_type() -> None:
    metrics = Metrics()
    metrics.outbox_waiting.set(7)

    body, content_type = metrics.render()

    assert content_type == CONTENT_TYPE_LATEST
    assert content_type.startswith("text/plain")
    assert b"voltpay_outbox_waiting_rows 7.0" in body
    assert b"# TYPE voltpay_sqs_received_total counter" in body
    assert b"process_resident_memory_bytes" in body


def test_sample_is_none_for_an_unknown_series() -> None:
    assert Metrics().sample("voltpay_nothing_total") is None


def test_agent_stats_track_a_message_through_the_mailbox() -> None:
    metrics = Metrics()
    stats = metrics.agent("bills", capacity=100)
    stats.started()
    stats.enqueued()
    stats.enqueued()

    assert metrics.sample("voltpay_agent_mailbox_capacity", AGENT) == 100.0
    assert metrics.sample("voltpay_agent_mailbox_depth", AGENT) == 2.0

    stats.dequeued()
    stats.began()
    assert metrics.sample("voltpay_agent_mailbox_depth", AGENT) == 1.0
    assert metrics.sample("voltpay_agent_in_flight", AGENT) == 1.0

    stats.succeeded(0.003)
    assert metrics.sample("voltpay_agent_in_flight", AGENT) == 0.0
    assert metrics.sample("voltpay_agent_messages_processed_total", AGENT) == 1.0
    assert metrics.sample("voltpay_agent_failures_total", AGENT) == 0.0
    assert metrics.sample("voltpay_agent_handling_duration_seconds_count", AGENT) == 1.0
    assert metrics.sample("voltpay_agent_handling_duration_seconds_sum", AGENT) == pytest.approx(
        0.003
    )
    assert stats.to_json() == {
        "agent": "bills",
        "state": "running",
        "mailboxDepth": 1,
        "mailboxCapacity": 100,
        "inFlight": 0,
        "processed": 1,
        "failed": 0,
        "lastError": None,
        "lastErrorCode": None,
        "lastErrorAt": None,
    }


def test_a_failure_counts_as_processed_and_remembers_the_error() -> None:
    metrics = Metrics()
    stats = metrics.agent("wallets", capacity=5)
    stats.began()
    stats.failed(0.2, TimeoutError("provider timed out"))

    labels = {"agent": "wallets"}
    assert metrics.sample("voltpay_agent_failures_total", labels) == 1.0
    assert metrics.sample("voltpay_agent_messages_processed_total", labels) == 1.0
    assert metrics.sample("voltpay_agent_in_flight", labels) == 0.0
    body = stats.to_json()
    assert body["processed"] == 1
    assert body["failed"] == 1
    assert body["lastError"] == "TimeoutError"
    assert body["lastErrorCode"] == "timeout"
    last_error_at = body["lastErrorAt"]
    assert isinstance(last_error_at, str)
    assert last_error_at.endswith("Z")
    assert datetime.fromisoformat(last_error_at).utcoffset() is not None


def test_agent_stats_never_go_negative_or_raise_on_unbalanced_calls() -> None:
    metrics = Metrics()
    stats = metrics.agent("audit", capacity=1)
    stats.dequeued()
    stats.succeeded(-1.0)

    labels = {"agent": "audit"}
    assert stats.depth == 0
    assert stats.in_flight == 0
    assert metrics.sample("voltpay_agent_mailbox_depth", labels) == 0.0
    assert metrics.sample("voltpay_agent_handling_duration_seconds_sum", labels) == 0.0


class OperationalError(Exception):
    """Named as the database drivers name theirs, from one of their modules."""


OperationalError.__module__ = "asyncpg.exceptions"


@pytest.mark.parametrize(
    ("error", "name", "code"),
    [
        (
            OperationalError('invalid byte sequence for encoding "UTF8": 0x00'),
            "OperationalError",
            "database",
        ),
        (TimeoutError("the vend of +2348012345678 timed out"), "TimeoutError", "timeout"),
        (ConnectionRefusedError("connect to 127.0.0.1:5432"), "ConnectionRefusedError", "network"),
        (KeyError("token 1234-5678-9012-3456-7890"), "KeyError", "internal"),
    ],
)
def test_the_agents_page_shows_an_errors_class_and_code_never_its_text(
    error: Exception, name: str, code: str
) -> None:
    stats = Metrics().agent("bills", capacity=1)
    stats.failed(0.1, error)

    body = stats.to_json()
    assert (body["lastError"], body["lastErrorCode"]) == (name, code)
    assert str(error.args[0]) not in str(body)
    for fragment in ("0x00", "2348012345678", "5432", "1234-5678"):
        assert fragment not in str(body)


def test_agent_state_follows_the_lifecycle() -> None:
    stats = Metrics().agent("bills", capacity=1)
    assert stats.to_json()["state"] == "stopped"
    stats.started()
    assert stats.to_json()["state"] == "running"
    stats.crashed(RuntimeError("loop died"))
    assert stats.to_json()["state"] == "crashed"
    assert stats.to_json()["lastError"] == "RuntimeError"
    stats.stopped()
    assert stats.to_json()["state"] == "stopped"


def test_agent_registers_once_per_name() -> None:
    metrics = Metrics()
    bills = metrics.agent("bills", capacity=10)
    wallets = metrics.agent("wallets", capacity=20)

    again = metrics.agent("bills", capacity=30)

    assert again is bills
    assert metrics.agents() == [bills, wallets]
    assert metrics.sample("voltpay_agent_mailbox_capacity", AGENT) == 30.0
    assert bills.to_json()["mailboxCapacity"] == 30


def test_a_routes_recorder_counts_as_the_labelled_families_do() -> None:
    by_labels, by_route = Metrics(), Metrics()
    record = by_route.http.route("/healthz")
    for method, status, seconds in [("GET", 200, 0.002), ("GET", 200, 0.3), ("HEAD", 503, 7.0)]:
        by_labels.http_requests.labels(route="/healthz", method=method, status=str(status)).inc()
        by_labels.http_duration.labels(route="/healthz", method=method).observe(seconds)
        record(method, status, seconds)
    assert by_route.http.collect() == by_labels.http.collect()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(by_route.render()[0].decode())
        for sample in family.samples
    }
    assert (
        samples[
            (
                "voltpay_http_requests_total",
                (("method", "GET"), ("route", "/healthz"), ("status", "200")),
            )
        ]
        == 2
    )
    count = (
        "voltpay_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/healthz")),
    )
    assert samples[count] == 2

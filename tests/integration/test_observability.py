"""What operators watch: /metrics after real traffic, and /api/agents."""

from __future__ import annotations

import re

from tests.client import Api, eventually
from voltpay.daemon.runtime import Daemon


def _sample(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else r"(\{[^}]*\})?")
    match = re.search(r"^" + pattern + r" ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in /metrics"
    return float(match.group(match.lastindex or 1))


async def test_metrics_follow_a_payment_through_every_part(api: Api, daemon: Daemon) -> None:
    who = await api.customer(funds="100.00")
    bill_id = (await api.bill(who, "100.00")).body["billId"]
    assert (await api.pay(who, bill_id)).status == 200

    async def all_sms_sent() -> bool:
        items = (await api.call("GET", "/api/notifications", customer=who)).body["items"]
        return len(items) == 4 and all(item["status"] == "sent" for item in items)

    await eventually(all_sms_sent, timeout=15)
    text = (await api.call("GET", "/metrics")).raw.decode()
    assert _sample(text, "voltpay_agent_messages_processed_total", 'agent="bills"') >= 2
    assert _sample(text, "voltpay_agent_messages_processed_total", 'agent="wallets"') >= 1
    # The notifications agent takes each SQS receive as one batch.
    assert _sample(text, "voltpay_agent_messages_processed_total", 'agent="notifications"') >= 1
    assert _sample(text, "voltpay_agent_messages_processed_total", 'agent="audit"') >= 1
    assert _sample(text, "voltpay_agent_failures_total", 'agent="bills"') == 0
    assert _sample(text, "voltpay_agent_handling_duration_seconds_count", 'agent="bills"') >= 2
    assert _sample(text, "voltpay_agent_mailbox_capacity", 'agent="bills"') == 1000
    assert _sample(text, "voltpay_agent_mailbox_depth", 'agent="bills"') == 0
    assert _sample(text, "voltpay_outbox_published_total") >= 4
    assert _sample(text, "voltpay_sqs_received_total") >= 4
    assert _sample(text, "voltpay_sms_sent_total", 'sender="log"') >= 4
    assert (
        _sample(
            text,
            "voltpay_http_requests_total",
            'method="POST",route="/api/Vend/{billId}/pay",status="200"',
        )
        == 1
    )
    assert 'route="/api/Vend/{billId}/pay"' in text
    assert bill_id not in text and who.user_id not in text, "no ids in labels"
    assert "voltpay_outbox_waiting_rows" in text
    assert "voltpay_sqs_dead_letter_messages" in text


async def test_agents_endpoint_reports_each_agent(api: Api) -> None:
    who = await api.customer(funds="10.00")
    assert who
    reply = await api.call("GET", "/api/agents")
    assert reply.status == 200
    agents = {agent["agent"]: agent for agent in reply.body["agents"]}
    assert {"bills", "wallets", "notifications", "audit", "outbox-relay", "sqs-poller"} <= set(
        agents
    )
    wallets = agents["wallets"]
    assert wallets["state"] == "running"
    assert wallets["processed"] >= 1
    assert wallets["mailboxCapacity"] == 1000
    assert wallets["lastError"] is None
    assert set(wallets) == {
        "agent",
        "state",
        "mailboxDepth",
        "mailboxCapacity",
        "inFlight",
        "processed",
        "failed",
        "lastError",
        "lastErrorCode",
        "lastErrorAt",
    }

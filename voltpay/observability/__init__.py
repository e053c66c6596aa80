"""What operators see of a running daemon: metrics and logs."""

from __future__ import annotations

from voltpay.observability.logging import (
    agent_var,
    configure_logging,
    event_id_var,
    log_context,
    redact,
    register_secret,
    request_id_var,
)
from voltpay.observability.metrics import AgentStats, Metrics

__all__ = [
    "AgentStats",
    "Metrics",
    "agent_var",
    "configure_logging",
    "event_id_var",
    "log_context",
    "redact",
    "register_secret",
    "request_id_var",
]

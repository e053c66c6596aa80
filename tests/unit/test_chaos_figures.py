"""The chaos run's funding figures fail the run when money came in wrong:
a funding credited twice, a gateway credit of no funding, a reference
funded twice, or a paid funding not credited exactly once."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.chaos import _funding_errors, verdict

PAID = frozenset({"vp_a", "vp_b"})


def funding(reference: str, status: str, credits: int, credited: int = 20000) -> tuple[Any, ...]:
    return (reference, status, 20000, 0, None, "t0", "t1", credits, credited)


def funded(reference: str) -> tuple[str]:
    return (json.dumps({"type": "wallet_funded", "data": {"reference": reference}}),)


def test_paid_fundings_credited_once_each_are_all_counted_credited() -> None:
    rows = [funding("vp_a", "succeeded", 1), funding("vp_b", "succeeded", 1)]
    rows.append(funding("vp_unpaid", "pending", 0, 0))
    found = _funding_errors(rows, [], [funded("vp_a"), funded("vp_b")], PAID)
    assert (found["initiated"], found["credited"], found["pending"]) == (3, 2, 1)
    assert not (found["double"] or found["stray"] or found["funded_twice"])
    assert not (found["uncredited"] or found["unknown_paid"])


def test_a_second_credit_a_stray_credit_or_a_second_event_is_a_double_credit() -> None:
    rows = [funding("vp_a", "succeeded", 2, 40000), funding("vp_b", "succeeded", 1)]
    stray = [("entry", "wallet", "no-such-funding", 20000, "t2")]
    found = _funding_errors(rows, stray, [funded("vp_b"), funded("vp_b")], PAID)
    assert [row["reference"] for row in found["double"]] == ["vp_a"]
    assert len(found["stray"]) == 1
    assert found["funded_twice"] == {"vp_b": 2}
    assert [row["reference"] for row in found["uncredited"]] == ["vp_a"]


def test_a_paid_funding_left_pending_or_credited_the_wrong_amount_is_uncredited() -> None:
    rows = [funding("vp_a", "pending", 0, 0), funding("vp_b", "succeeded", 1, 100)]
    found = _funding_errors(rows, [], [], PAID | {"vp_gone"})
    assert found["credited"] == 0
    assert sorted(row["reference"] for row in found["uncredited"]) == ["vp_a", "vp_b"]
    assert found["unknown_paid"] == ["vp_gone"]


def test_the_verdict_needs_every_paid_funding_credited() -> None:
    clean = {
        "texted": 5,
        "audited": 5,
        "committed": 5,
        "fundings_paid": 3,
        "fundings_credited": 3,
        "fundings_double_credited": 0,
        "fundings_uncredited": 0,
    }
    zero = dict.fromkeys(
        ("errors_5xx", "overdrafts", "double_debits", "stuck_processing", "duplicate_sms"), 0
    )
    zero |= dict.fromkeys(
        ("lost_sms", "shared_tokens", "unclean_exits", "restart_failures", "harness_errors"), 0
    )
    assert verdict({**zero, **clean}, None)
    assert not verdict({**zero, **clean, "fundings_credited": 4}, None)
    assert not verdict({**zero, **clean, "fundings_double_credited": 1}, None)
    assert not verdict({**zero, **clean, "fundings_uncredited": 1}, None)

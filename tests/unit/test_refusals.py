"""Every refusal has one row in the table that maps it to HTTP, and the
domain's exceptions carry no HTTP of their own."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import voltpay
from voltpay.agents.mailbox import Overloaded, Stopped
from voltpay.domain import errors
from voltpay.domain.errors import DomainError
from voltpay.domain.vending import InvalidMeterNumber, ProviderUnavailable
from voltpay.http.errors import REFUSALS, problem_for


def _every_domain_error() -> set[type[DomainError]]:
    for module in pkgutil.walk_packages(voltpay.__path__, "voltpay."):
        if not module.name.endswith("__main__"):  # which runs the command line
            importlib.import_module(module.name)
    found: set[type[DomainError]] = set()
    waiting: list[type[DomainError]] = [DomainError]
    while waiting:
        kind = waiting.pop()
        found.add(kind)
        waiting.extend(kind.__subclasses__())
    return found


def test_every_refusal_that_is_raised_has_a_row_of_its_own() -> None:
    bases = {DomainError, errors.NotFound, errors.BillNotPayable}
    leaves = _every_domain_error() - bases
    missing = {kind.__name__ for kind in leaves if not set(kind.__mro__[:2]) & set(REFUSALS)}
    assert missing == set()


def test_domain_errors_know_nothing_of_http() -> None:
    for kind in _every_domain_error():
        assert not {"status", "code"} & set(vars(kind)), kind


@pytest.mark.parametrize(
    ("error", "status", "code", "headers"),
    [
        (errors.BillNotFound("no such bill"), 404, "not_found", {}),
        (errors.InsufficientFunds("short"), 402, "insufficient_funds", {}),
        (errors.IdempotencyKeyBusy("x"), 409, "idempotency_in_progress", {"Retry-After": "1"}),
        (InvalidMeterNumber("12"), 422, "invalid_meter_number", {}),
        (ProviderUnavailable("down"), 503, "provider_unavailable", {}),
        (Overloaded("bills", retry_after_seconds=2), 503, "overloaded", {"Retry-After": "2"}),
        (Stopped("bills"), 503, "shutting_down", {"Retry-After": "5"}),
    ],
)
def test_a_refusal_answers_with_its_rows_status_code_and_headers(
    error: Exception, status: int, code: str, headers: dict[str, str]
) -> None:
    problem = problem_for(error)
    assert problem is not None
    assert (problem.status, problem.code, problem.headers) == (status, code, headers)


def test_an_error_that_is_no_refusal_has_no_problem() -> None:
    assert problem_for(RuntimeError("boom")) is None

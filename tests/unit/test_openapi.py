"""The OpenAPI document as built for each configuration; that the server
answers as it says is the contract fuzzer's part (test_api_fuzz.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from voltpay.http.openapi import openapi_document
from voltpay.http.schemas import IDEMPOTENCY_KEY_PATTERN

CONFIGURATIONS = [
    ("sandbox", False),
    ("sandbox", True),
    ("gateway", False),
    ("gateway", True),
]


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        operation["operationId"]: operation
        for methods in document["paths"].values()
        for operation in methods.values()
    }


def _references(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_references(value) for value in node))
    return set()


@pytest.mark.parametrize(("mode", "operators_listener"), CONFIGURATIONS)
def test_every_reference_names_a_schema_of_the_document(
    mode: Any, operators_listener: bool
) -> None:
    document = openapi_document(mode, operators_listener)
    names = {ref.removeprefix("#/components/schemas/") for ref in _references(document)}
    assert names <= set(document["components"]["schemas"])


@pytest.mark.parametrize(("mode", "operators_listener"), CONFIGURATIONS)
def test_every_link_names_an_operation_and_its_parameter(
    mode: Any, operators_listener: bool
) -> None:
    operations = _operations(openapi_document(mode, operators_listener))
    for operation in operations.values():
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                target = operations[link["operationId"]]
                names = {p["name"] for p in target.get("parameters", ())}
                assert set(link["parameters"]) <= names, link


def test_wallet_and_bill_ids_lead_to_the_operations_that_take_them() -> None:
    operations = _operations(openapi_document())

    def targets(operation_id: str, status: str) -> set[str]:
        links = operations[operation_id]["responses"][status]["links"]
        return {link["operationId"] for link in links.values()}

    wallet = {
        "get_api_wallets_walletId",
        "post_api_wallets_walletId_add-funds",
        "get_api_wallets_walletId_transactions",
        "post_api_admin_wallets_walletId_credits",
    }
    assert targets("post_api_auth_register", "201") == wallet
    assert targets("post_api_auth_login", "200") == wallet
    assert targets("get_api_me", "200") == wallet
    assert targets("post_api_electricity_verify", "201") == {
        "get_api_bills_billId",
        "post_api_Vend_billId_pay",
        "post_api_vend_billId_pay",
    }


def test_the_gateway_webhook_and_intents_are_in_gateway_mode_only() -> None:
    sandbox, gateway = openapi_document("sandbox"), openapi_document("gateway")
    assert "/api/gateway/paystack/webhook" not in sandbox["paths"]
    assert "/api/gateway/paystack/webhook" in gateway["paths"]
    add_funds = "/api/wallets/{walletId}/add-funds"
    assert {"200"} <= set(sandbox["paths"][add_funds]["post"]["responses"])
    assert "201" not in sandbox["paths"][add_funds]["post"]["responses"]
    assert "201" in gateway["paths"][add_funds]["post"]["responses"]
    assert "200" not in gateway["paths"][add_funds]["post"]["responses"]


def test_metrics_and_agents_are_documented_where_they_are_served() -> None:
    assert {"/metrics", "/api/agents"} <= set(openapi_document("sandbox", False)["paths"])
    assert not {"/metrics", "/api/agents"} & set(openapi_document("sandbox", True)["paths"])


def test_an_idempotency_key_is_documented_as_the_front_checks_it() -> None:
    operations = _operations(openapi_document())
    for operation in operations.values():
        for parameter in operation.get("parameters", ()):
            if parameter["name"] == "Idempotency-Key":
                assert parameter["schema"]["pattern"] == IDEMPOTENCY_KEY_PATTERN
                assert parameter["schema"]["maxLength"] == 255
    assert re.fullmatch(IDEMPOTENCY_KEY_PATTERN, "order-42:retry")
    for refused in ("", "has space", "é", "x" * 256, "tab\there"):
        assert not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, refused)


def test_a_key_kept_per_user_documents_its_409_and_422_on_every_post_with_a_session() -> None:
    for operation in _operations(openapi_document("gateway")).values():
        keyed = any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", ()))
        if keyed and "security" in operation:
            responses = operation["responses"]
            assert "idempotency_key_reused" in responses["422"]["description"]
            assert "idempotency_in_progress" in responses["409"]["description"]


def test_every_api_operation_documents_429() -> None:
    for path, methods in openapi_document()["paths"].items():
        for operation in methods.values():
            assert ("429" in operation["responses"]) == path.startswith("/api/"), path


def test_login_documents_the_bounds_it_checks() -> None:
    login = openapi_document()["components"]["schemas"]["LoginRequest"]["properties"]
    assert (login["username"]["minLength"], login["username"]["maxLength"]) == (1, 64)
    assert (login["password"]["minLength"], login["password"]["maxLength"]) == (1, 128)


def test_every_operation_documents_the_listeners_400_for_malformed_http() -> None:
    for methods in openapi_document()["paths"].values():
        for operation in methods.values():
            assert "malformed_request" in operation["responses"]["400"]["description"]

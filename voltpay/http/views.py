"""How stored rows look on the wire (API.md)."""

from __future__ import annotations

from typing import Any

from voltpay.domain.bills import BillStatus, effective_status
from voltpay.domain.events import rfc3339
from voltpay.domain.money import format_minor
from voltpay.domain.sts import format_token
from voltpay.models.tables import (
    Bill,
    Funding,
    LedgerEntry,
    Notification,
    OperatorAction,
    OperatorCredit,
    Wallet,
)


def _time(value: Any) -> str | None:
    return rfc3339(value) if value is not None else None


def bill_view(bill: Bill, now: Any = None) -> dict[str, Any]:
    status = BillStatus(bill.status)
    if now is not None:
        status = effective_status(status, bill.expires_at, now)
    return {
        "billId": str(bill.id),
        "meterNumber": bill.meter_number,
        "meterType": bill.meter_type,
        "customerName": bill.customer_name,
        "address": bill.address,
        "amount": format_minor(bill.amount_minor),
        "status": status.value,
        "token": format_token(bill.token) if bill.token else None,
        "units": bill.units,
        "tariff": format_minor(bill.tariff_minor_per_kwh),
        "receiptNumber": bill.receipt_number,
        "createdAt": rfc3339(bill.created_at),
        "expiresAt": rfc3339(bill.expires_at),
        "paidAt": _time(bill.paid_at),
    }


def wallet_view(wallet: Wallet) -> dict[str, Any]:
    return {
        "walletId": str(wallet.id),
        "balance": format_minor(wallet.balance_minor),
        "currency": wallet.currency,
        "updatedAt": rfc3339(wallet.updated_at),
    }


def transaction_view(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "transactionId": str(entry.id),
        "kind": entry.kind,
        "amount": format_minor(abs(entry.amount_minor)),
        "balanceAfter": format_minor(entry.balance_after_minor),
        "billId": str(entry.bill_id) if entry.bill_id else None,
        "source": entry.source,
        "createdAt": rfc3339(entry.created_at),
    }


def funding_view(funding: Funding) -> dict[str, Any]:
    return {
        "fundingId": str(funding.id),
        "walletId": str(funding.wallet_id),
        "reference": funding.reference,
        "amount": format_minor(funding.amount_minor),
        "currency": funding.currency,
        "status": funding.status,
        "checkoutUrl": funding.checkout_url,
        "transactionId": str(funding.transaction_id) if funding.transaction_id else None,
        "createdAt": rfc3339(funding.created_at),
        "expiresAt": rfc3339(funding.expires_at),
        "settledAt": _time(funding.settled_at),
    }


def operator_credit_view(credit: OperatorCredit, operator: str) -> dict[str, Any]:
    return {
        "creditId": str(credit.id),
        "walletId": str(credit.wallet_id),
        "amount": format_minor(credit.amount_minor),
        "reason": credit.reason,
        "operator": operator,
        "transactionId": str(credit.transaction_id),
        "createdAt": rfc3339(credit.created_at),
        "reversedAt": _time(credit.reversed_at),
    }


def operator_action_view(action: OperatorAction) -> dict[str, Any]:
    return {
        "actionId": str(action.id),
        "operatorId": str(action.operator_id),
        "operator": action.operator_username,
        "action": action.action,
        "walletId": str(action.wallet_id),
        "subjectId": str(action.subject_id),
        "amount": format_minor(action.amount_minor),
        "reason": action.reason,
        "createdAt": rfc3339(action.created_at),
    }


def notification_view(row: Notification) -> dict[str, Any]:
    return {
        "notificationId": str(row.id),
        "eventId": str(row.event_id),
        "eventType": row.event_type,
        "to": row.to,
        "body": row.body,
        "status": row.status,
        "createdAt": rfc3339(row.created_at),
        "sentAt": _time(row.sent_at),
    }

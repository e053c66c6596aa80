"""How stored rows look on the wire (API.md)."""

from __future__ import annotations

from typing import Any

from voltpay.domain.bills import BillStatus, effective_status
from voltpay.domain.events import rfc3339
from voltpay.domain.money import format_minor
from voltpay.domain.sts import format_token
from voltpay.models.tables import Bill, LedgerEntry, Notification, Wallet


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
        "createdAt": rfc3339(entry.created_at),
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

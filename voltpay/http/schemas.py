"""Request and response shapes. The same models validate requests and
generate /openapi.json, so the document cannot drift from the code."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from annotated_types import GroupedMetadata
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from voltpay.domain.money import DECIMAL_STRING_PATTERN, AmountError, parse_amount

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,64}$"
PHONE_PATTERN = r"^\+[1-9][0-9]{7,14}$"
MONEY_PATTERN = r"^[0-9]+\.[0-9]{2}$"
METER_MAX_LENGTH = 32
# Idempotency-Key: 1 to 255 printable ASCII characters, no space.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"


def _money(value: object) -> Decimal:
    try:
        return parse_amount(value)
    except AmountError as exc:
        raise PydanticCustomError(exc.code, str(exc)) from None


def _meter(value: object) -> str:
    if not isinstance(value, str) or len(value) > METER_MAX_LENGTH or not value.strip():
        raise PydanticCustomError(
            "invalid_meter_number", "meterNumber must be a meter number string"
        )
    return value.strip()


@dataclass(frozen=True)
class Text(GroupedMetadata):
    """A string field's rule: its check and its JSON Schema, made from the
    same bounds, so the document says exactly what the check accepts."""

    code: str
    low: int
    high: int
    what: str
    pattern: str | None = None

    def check(self, value: object) -> str:
        if not isinstance(value, str) or not self.low <= len(value) <= self.high:
            raise PydanticCustomError(
                self.code, f"{self.what} must be a string of {self.low} to {self.high} characters"
            )
        # fullmatch: re's "$" also matches before a final newline.
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise PydanticCustomError(self.code, f"{self.what} does not have the required form")
        return value

    def __iter__(self) -> Iterator[object]:
        schema: dict[str, Any] = {"type": "string", "minLength": self.low, "maxLength": self.high}
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        yield BeforeValidator(self.check)
        yield WithJsonSchema(schema)


MoneyIn = Annotated[
    Decimal,
    BeforeValidator(_money),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.01},
                {"type": "string", "pattern": DECIMAL_STRING_PATTERN},
            ],
            "description": "An amount greater than 0 with at most 2 decimal places.",
            "examples": ["100.00", 100.0],
        }
    ),
]
MoneyOut = Annotated[str, Field(pattern=MONEY_PATTERN, examples=["150.00"])]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class RegisterRequest(Body):
    username: Annotated[
        str,
        Text("invalid_username", 3, 64, "username", USERNAME_PATTERN),
        Field(description="3-64 of A-Z a-z 0-9 _ . -"),
    ]
    password: Annotated[str, Text("invalid_password", 8, 128, "password")]
    phone_number: Annotated[
        str,
        Text("invalid_phone_number", 9, 16, "phoneNumber", PHONE_PATTERN),
        Field(alias="phoneNumber", description="E.164, e.g. +2348012345678"),
    ]


class PhoneCodeRequest(Body):
    code: Annotated[
        str,
        Text("invalid_code", 6, 6, "code", r"^[0-9]{6}$"),
        Field(description="the six digits sent by SMS"),
    ]


class LoginRequest(Body):
    username: Annotated[str, Text("invalid_username", 1, 64, "username")]
    password: Annotated[str, Text("invalid_password", 1, 128, "password")]


class ChangePasswordRequest(Body):
    current_password: Annotated[
        str, Text("invalid_password", 1, 128, "currentPassword"), Field(alias="currentPassword")
    ]
    new_password: Annotated[
        str, Text("invalid_password", 8, 128, "newPassword"), Field(alias="newPassword")
    ]


class AddFundsRequest(Body):
    amount: MoneyIn


class OperatorCreditRequest(Body):
    amount: MoneyIn
    reason: Annotated[
        str,
        Text("invalid_reason", 3, 500, "reason"),
        Field(description="why the operator credits this wallet (kept in the audit trail)"),
    ]


class PaystackCharge(Body):
    model_config = ConfigDict(extra="allow")
    reference: str = Field(max_length=64)
    amount: int = Field(ge=0, description="minor units (kobo)")
    currency: str
    status: str


class PaystackEvent(Body):
    """A Paystack webhook event as the gateway sends it (``charge.success``
    is the one acted on); the signature header authenticates it."""

    model_config = ConfigDict(extra="allow")
    event: str = Field(examples=["charge.success"])
    data: PaystackCharge


class ReversalRequest(Body):
    reason: Annotated[str, Text("invalid_reason", 3, 500, "reason")]


class VerifyRequest(Body):
    meter_number: Annotated[
        str,
        BeforeValidator(_meter),
        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": METER_MAX_LENGTH}),
        Field(
            alias="meterNumber",
            description="the meter's number; whitespace around it is ignored",
            examples=["45012345678", "A123456"],
        ),
    ]
    amount: MoneyIn


class PayRequest(Body):
    wallet_id: uuid.UUID | None = Field(default=None, alias="walletId")


# -- responses ----------------------------------------------------------------


class Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class UserOut(Out):
    user_id: uuid.UUID = Field(alias="userId")
    username: str
    phone_number: str = Field(alias="phoneNumber")
    wallet_id: uuid.UUID = Field(alias="walletId")
    phone_verified: bool = Field(alias="phoneVerified")


class PhoneVerifiedOut(Out):
    phone_verified: bool = Field(alias="phoneVerified")


class LoginOut(Out):
    token: str
    expires_at: str = Field(alias="expiresAt")
    user_id: uuid.UUID = Field(alias="userId")
    wallet_id: uuid.UUID = Field(alias="walletId")


class WalletOut(Out):
    wallet_id: uuid.UUID = Field(alias="walletId")
    balance: MoneyOut
    currency: str
    updated_at: str = Field(alias="updatedAt")


class FundsAddedOut(Out):
    wallet_id: uuid.UUID = Field(alias="walletId")
    balance: MoneyOut
    transaction_id: uuid.UUID = Field(alias="transactionId")


class TransactionOut(Out):
    transaction_id: uuid.UUID = Field(alias="transactionId")
    kind: Literal["credit", "debit", "refund", "reversal"]
    amount: MoneyOut
    balance_after: MoneyOut = Field(alias="balanceAfter")
    bill_id: uuid.UUID | None = Field(alias="billId")
    source: Literal["sandbox", "gateway", "operator"] | None = Field(
        description="where a credit's money came from; null for a bill's debit and refund"
    )
    created_at: str = Field(alias="createdAt")


class TransactionPage(Out):
    items: list[TransactionOut]
    next_cursor: str | None = Field(alias="nextCursor")


class FundingOut(Out):
    funding_id: uuid.UUID = Field(alias="fundingId")
    wallet_id: uuid.UUID = Field(alias="walletId")
    reference: str
    amount: MoneyOut
    currency: str
    status: Literal["pending", "succeeded", "failed", "expired", "needs_review"]
    checkout_url: str | None = Field(alias="checkoutUrl")
    transaction_id: uuid.UUID | None = Field(alias="transactionId")
    created_at: str = Field(alias="createdAt")
    expires_at: str = Field(alias="expiresAt")
    settled_at: str | None = Field(alias="settledAt")


class FundingPage(Out):
    items: list[FundingOut]
    next_cursor: str | None = Field(alias="nextCursor")


class WebhookAck(Out):
    status: str


class OperatorCreditOut(Out):
    credit_id: uuid.UUID = Field(alias="creditId")
    wallet_id: uuid.UUID = Field(alias="walletId")
    amount: MoneyOut
    reason: str
    operator: str
    transaction_id: uuid.UUID = Field(alias="transactionId")
    created_at: str = Field(alias="createdAt")
    reversed_at: str | None = Field(alias="reversedAt")


class OperatorActionOut(Out):
    action_id: uuid.UUID = Field(alias="actionId")
    operator_id: uuid.UUID = Field(alias="operatorId")
    operator: str
    action: Literal["credit", "reverse"]
    wallet_id: uuid.UUID = Field(alias="walletId")
    subject_id: uuid.UUID = Field(alias="subjectId")
    amount: MoneyOut
    reason: str
    created_at: str = Field(alias="createdAt")


class AuditPage(Out):
    items: list[OperatorActionOut]
    next_cursor: str | None = Field(alias="nextCursor")


class BillOut(Out):
    bill_id: uuid.UUID = Field(alias="billId")
    meter_number: str = Field(alias="meterNumber")
    meter_type: str = Field(alias="meterType")
    customer_name: str = Field(alias="customerName")
    address: str
    amount: MoneyOut
    status: Literal["pending", "processing", "paid", "expired", "failed"]
    token: str | None = Field(description="20 digits in five groups of four")
    units: str | None = Field(description="kWh as a decimal string")
    tariff: MoneyOut = Field(description="price per kWh")
    receipt_number: str | None = Field(alias="receiptNumber")
    created_at: str = Field(alias="createdAt")
    expires_at: str = Field(alias="expiresAt")
    paid_at: str | None = Field(alias="paidAt")


class PaidBillOut(BillOut):
    wallet_balance: MoneyOut | None = Field(alias="walletBalance")


class BillPage(Out):
    items: list[BillOut]
    next_cursor: str | None = Field(alias="nextCursor")


class NotificationOut(Out):
    notification_id: uuid.UUID = Field(alias="notificationId")
    event_id: uuid.UUID = Field(alias="eventId")
    event_type: str = Field(alias="eventType")
    to: str
    body: str
    status: Literal["queued", "sent", "failed"]
    created_at: str = Field(alias="createdAt")
    sent_at: str | None = Field(alias="sentAt")


class NotificationPage(Out):
    items: list[NotificationOut]
    next_cursor: str | None = Field(alias="nextCursor")


class ProblemOut(Out):
    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None


class AgentOut(Out):
    agent: str
    state: str
    mailbox_depth: int = Field(alias="mailboxDepth")
    mailbox_capacity: int = Field(alias="mailboxCapacity")
    in_flight: int = Field(alias="inFlight")
    processed: int
    failed: int
    last_error: str | None = Field(alias="lastError")
    last_error_code: str | None = Field(alias="lastErrorCode")
    last_error_at: str | None = Field(alias="lastErrorAt")


class AgentsOut(Out):
    agents: list[AgentOut]

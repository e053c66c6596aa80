"""The simulated electricity provider's state in the database every daemon
shares.

The provider stands for a service outside the daemons, so its state is one
for all of them: a vend made through one daemon is found by another's
requery, a request id vended through two daemons at once is stored once, and
a meter's token identifiers rise across all of them. Each method is a single
statement (a read, an insert-if-absent or an upsert), atomic on SQLite and
PostgreSQL alike.

``DatabaseVendStore`` is the ``VendStore`` of ``voltpay.bridges.electricity``
by its shape: models never import bridges, so the records it reads and
writes are the plain domain values of ``voltpay.domain.vending``, which both
sides import.

Nothing deletes these rows: a real provider keeps its records, and they are
one row per vend and one per meter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tortoise import connections

from voltpay.domain.vending import VendRecord, VendResult, VendStatus
from voltpay.models import sql

RECEIPT_BLOCK = 1000
"""Receipt numbers a store takes from the shared series at a time."""

# The key of the one row of simulated_meters that counts blocks of receipt
# numbers instead of a meter's token identifiers. Meter numbers are 11 digits
# or a letter and six digits, so no meter can take it.
_RECEIPT_BLOCKS = "receipt blocks"

_FIND = (
    "SELECT meter_number, amount_minor, status, token, units, tariff_minor_per_kwh, "
    "receipt_number, reason FROM simulated_vends WHERE request_id = $1"
)
_ADD = (
    "INSERT INTO simulated_vends (request_id, meter_number, amount_minor, status, token, "
    "units, tariff_minor_per_kwh, receipt_number, reason, created_at) "
    f"VALUES ({sql.placeholders(10)}) ON CONFLICT (request_id) DO NOTHING"
)
# One past the row's last value, or the value offered when that is larger (or
# when the row is new), stored and answered in one statement.
_NEXT_IN_SERIES = (
    "INSERT INTO simulated_meters (meter_number, last_token_minute) VALUES ($1, $2) "
    "ON CONFLICT (meter_number) DO UPDATE SET last_token_minute = "
    "{larger}(excluded.last_token_minute, simulated_meters.last_token_minute + 1) "
    "RETURNING last_token_minute"
)
_NEXT_ON_SQLITE = _NEXT_IN_SERIES.format(larger="MAX")
_NEXT_ON_POSTGRES = _NEXT_IN_SERIES.format(larger="GREATEST")


class DatabaseVendStore:
    """The simulated provider's ``VendStore`` on the default connection.

    Receipt numbers come from one series shared through the database, a
    block of ``receipt_block`` at a time: every store takes whole blocks no
    other store took, so no two daemons hand out one number, and the shared
    row is written once a block, not once a vend.
    """

    def __init__(self, *, receipt_block: int = RECEIPT_BLOCK) -> None:
        if receipt_block < 1:
            raise ValueError("receipt_block must be at least 1")
        self._receipt_block = receipt_block
        self._next_receipt = 0
        self._receipt_block_end = 0

    async def find(self, request_id: str) -> VendRecord | None:
        found = await sql.rows(connections.get("default"), _FIND, request_id)
        return _record(request_id, found[0]) if found else None

    async def add(self, request_id: str, record: VendRecord) -> bool:
        result = record.result
        added = await sql.execute(
            connections.get("default"),
            _ADD,
            request_id,
            record.meter_number,
            record.amount_minor,
            record.status.value,
            result.token if result else None,
            str(result.units) if result else None,
            result.tariff_minor_per_kwh if result else None,
            result.receipt_number if result else None,
            record.reason,
            datetime.now(UTC),
        )
        return added == 1

    async def next_token_minute(self, meter: str, now_minute: int) -> int:
        return await _next_in_series(meter, now_minute)

    async def next_receipt_number(self) -> int:
        if self._next_receipt == self._receipt_block_end:
            block = await _next_in_series(_RECEIPT_BLOCKS, 0)
            self._next_receipt = block * self._receipt_block
            self._receipt_block_end = self._next_receipt + self._receipt_block
        number = self._next_receipt
        self._next_receipt += 1
        return number


async def _next_in_series(key: str, at_least: int) -> int:
    conn = connections.get("default")
    statement = _NEXT_ON_SQLITE if sql.is_sqlite(conn) else _NEXT_ON_POSTGRES
    found = await sql.rows(conn, statement, key, at_least)
    return int(found[0]["last_token_minute"])


def _record(request_id: str, row: dict[str, Any]) -> VendRecord:
    status = VendStatus(row["status"])
    result = None
    if status is VendStatus.SUCCESS:
        result = VendResult(
            request_id=request_id,
            token=row["token"],
            units=Decimal(row["units"]),
            tariff_minor_per_kwh=int(row["tariff_minor_per_kwh"]),
            receipt_number=row["receipt_number"],
        )
    return VendRecord(
        meter_number=row["meter_number"],
        amount_minor=int(row["amount_minor"]),
        status=status,
        result=result,
        reason=row["reason"],
    )

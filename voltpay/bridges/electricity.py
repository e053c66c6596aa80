"""The electricity provider port and the simulated provider behind it.

Meter numbers the simulated provider accepts:

* 11 digits, e.g. ``45012345678``;
* the legacy form, one letter and six digits, e.g. ``A123456`` (a lower-case
  letter is accepted and answered in upper case).

Anything else, including spaces or dashes, is an invalid meter number
(``InvalidMeterNumber``).

Meters that do not exist (``MeterNotFound``): 11-digit numbers starting with
``000`` (e.g. ``00000000000``) and letter-form numbers starting with ``Z``
(e.g. ``Z999999``). Every other valid number is a prepaid meter whose customer
name and address are derived from the number, so they are the same on every
run.

Tokens are SIMULATED STS tokens (see ``voltpay.domain.sts``): they decode with
the provider's token key but are not valid on a real meter.

The simulated provider stands for a service outside the daemons, so what it
knows lives in a ``VendStore``: in memory for one process
(``InMemoryVendStore``), or in the database every daemon shares
(``voltpay.models.simulated_provider.DatabaseVendStore``), where tokens stay
unique per meter and any daemon's requery finds any daemon's vend.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from voltpay.config.settings import ConfigurationError, ProviderSettings
from voltpay.domain import sts
from voltpay.domain.money import format_minor
from voltpay.domain.vending import InvalidMeterNumber as InvalidMeterNumber
from voltpay.domain.vending import MeterNotFound as MeterNotFound
from voltpay.domain.vending import ProviderError as ProviderError
from voltpay.domain.vending import ProviderUnavailable as ProviderUnavailable
from voltpay.domain.vending import VendFailed as VendFailed
from voltpay.domain.vending import VendOutcomeUnknown as VendOutcomeUnknown
from voltpay.domain.vending import VendRecord
from voltpay.domain.vending import VendResult as VendResult
from voltpay.domain.vending import VendStatus as VendStatus

DEFAULT_TOKEN_KEY = b"voltpay-simulated-sts-token-key"
DEFAULT_REMEMBERED_REQUESTS = 20_000
REQUEST_ID_REUSED = "request id reused"

_ELEVEN_DIGITS = re.compile(r"[0-9]{11}")
_LETTER_AND_SIX_DIGITS = re.compile(r"[A-Za-z][0-9]{6}")
_RECEIPT_NUMBERS = 10**12


@dataclass(frozen=True)
class MeterInfo:
    meter_number: str
    meter_type: str
    customer_name: str
    address: str
    minimum_amount_minor: int
    maximum_amount_minor: int


@dataclass(frozen=True)
class RequeryResult:
    status: VendStatus
    result: VendResult | None
    """Set when ``status`` is SUCCESS."""
    reason: str | None
    """Set when ``status`` is FAILED."""


class ElectricityProvider(Protocol):
    """What the bills agent needs from an electricity vending provider.

    Every method may raise ProviderUnavailable. ``request_id`` is the caller's
    idempotency key: vending again with the same id, meter and amount never
    vends twice and answers the first outcome.
    """

    async def verify(self, meter_number: str) -> MeterInfo:
        """Raises InvalidMeterNumber or MeterNotFound."""
        ...

    async def vend(self, request_id: str, meter_number: str, amount_minor: int) -> VendResult:
        """Raises InvalidMeterNumber, MeterNotFound, VendFailed (nothing vended)
        or VendOutcomeUnknown (resolve it with ``requery``)."""
        ...

    async def requery(self, request_id: str) -> RequeryResult:
        """NOT_FOUND means the vend never reached the provider."""
        ...

    async def close(self) -> None: ...


def normalize_meter_number(meter_number: str) -> str:
    """The meter number in its canonical form, or InvalidMeterNumber."""
    if _ELEVEN_DIGITS.fullmatch(meter_number):
        return meter_number
    if _LETTER_AND_SIX_DIGITS.fullmatch(meter_number):
        return meter_number.upper()
    raise InvalidMeterNumber(meter_number)


_FIRST_NAMES = (
    "Adebayo",
    "Chiamaka",
    "Emeka",
    "Ngozi",
    "Oluwaseun",
    "Aisha",
    "Ibrahim",
    "Funmilayo",
    "Chinedu",
    "Yetunde",
    "Babatunde",
    "Amina",
    "Obinna",
    "Zainab",
    "Kelechi",
    "Folake",
)
_SURNAMES = (
    "Okafor",
    "Adeyemi",
    "Balogun",
    "Eze",
    "Nwosu",
    "Ogunleye",
    "Abubakar",
    "Okonkwo",
    "Adeleke",
    "Bello",
    "Obi",
    "Olawale",
    "Umar",
    "Chukwu",
    "Afolabi",
    "Danjuma",
)
_STREETS = (
    "Adeola Odeku Street",
    "Awolowo Road",
    "Allen Avenue",
    "Herbert Macaulay Way",
    "Ahmadu Bello Way",
    "Bode Thomas Street",
    "Aba Road",
    "Ogui Road",
    "Isaac John Street",
    "Adetokunbo Ademola Crescent",
    "Broad Street",
    "Ring Road",
)
_AREAS = (
    "Ikeja, Lagos",
    "Victoria Island, Lagos",
    "Surulere, Lagos",
    "Wuse II, Abuja",
    "Garki, Abuja",
    "Port Harcourt, Rivers",
    "Bodija, Ibadan",
    "Independence Layout, Enugu",
    "Nassarawa, Kano",
    "GRA, Benin City",
    "Abeokuta, Ogun",
    "Barnawa, Kaduna",
)


class VendStore(Protocol):
    """Where the simulated provider keeps what it knows: the record of each
    request id, each meter's last token identifier and the receipt numbers
    handed out.

    Each method is atomic on its own. Providers that share one store (daemons
    over one database) therefore share one record per request id, one rising
    token identifier per meter and one series of receipt numbers.
    """

    async def find(self, request_id: str) -> VendRecord | None:
        """The record stored for ``request_id``, if any."""
        ...

    async def add(self, request_id: str, record: VendRecord) -> bool:
        """Store ``record`` for ``request_id`` unless a record is stored for
        it already (the first writer wins); True when this one was stored."""
        ...

    async def next_token_minute(self, meter: str, now_minute: int) -> int:
        """The larger of ``now_minute`` and one past the meter's last token
        identifier, stored as its last: larger than every earlier answer for
        this meter."""
        ...

    async def next_receipt_number(self) -> int:
        """A non-negative number no earlier call answered, on this store or on
        any store over the same shared state."""
        ...


# What the in-memory store keeps of a request: a tuple of strings, numbers and
# None, which the garbage collector stops tracking after its first look. Kept
# as VendRecord and VendResult objects, every remembered request would be two
# objects that each full collection walks.
_Kept = tuple[str, int, str, str | None, Decimal | None, int | None, str | None, str | None]


def _keep(record: VendRecord) -> _Kept:
    result = record.result
    return (
        record.meter_number,
        record.amount_minor,
        record.status.value,
        result.token if result else None,
        result.units if result else None,
        result.tariff_minor_per_kwh if result else None,
        result.receipt_number if result else None,
        record.reason,
    )


def _recall(request_id: str, kept: _Kept) -> VendRecord:
    meter, amount_minor, status, token, units, tariff, receipt, reason = kept
    result = None
    if token is not None and units is not None and tariff is not None and receipt is not None:
        result = VendResult(request_id, token, units, tariff, receipt)
    return VendRecord(meter, amount_minor, VendStatus(status), result=result, reason=reason)


class InMemoryVendStore:
    """A ``VendStore`` in this process's memory, for one process alone.

    It keeps the last ``max_remembered`` request ids and the last
    ``max_remembered`` meters' token identifiers. Receipt numbers count up from
    a random start, so a restarted process is unlikely to repeat its
    predecessor's.
    """

    def __init__(
        self, max_remembered: int = DEFAULT_REMEMBERED_REQUESTS, *, rng: random.Random | None = None
    ) -> None:
        if max_remembered < 1:
            raise ValueError("max_remembered_requests must be at least 1")
        self._max_remembered = max_remembered
        self._records: OrderedDict[str, _Kept] = OrderedDict()
        self._last_token_minute: OrderedDict[str, int] = OrderedDict()
        self._next_receipt = (rng if rng is not None else random.Random()).randrange(
            _RECEIPT_NUMBERS
        )

    async def find(self, request_id: str) -> VendRecord | None:
        kept = self._records.get(request_id)
        return None if kept is None else _recall(request_id, kept)

    async def add(self, request_id: str, record: VendRecord) -> bool:
        if request_id in self._records:
            return False
        self._records[request_id] = _keep(record)
        if len(self._records) > self._max_remembered:
            self._records.popitem(last=False)
        return True

    async def next_token_minute(self, meter: str, now_minute: int) -> int:
        last = self._last_token_minute.get(meter)
        minute = now_minute if last is None else max(now_minute, last + 1)
        self._last_token_minute[meter] = minute
        self._last_token_minute.move_to_end(meter)
        if len(self._last_token_minute) > self._max_remembered:
            self._last_token_minute.popitem(last=False)
        return minute

    async def next_receipt_number(self) -> int:
        number = self._next_receipt
        self._next_receipt += 1
        return number


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SimulatedProvider:
    """A simulated provider for development and tests.

    ``failure_rate`` and ``timeout_rate`` make fresh vends fail (confirmed,
    nothing vended) or lose their answer (the vend DID happen; ``requery``
    tells), and ``unavailable`` makes every call raise ProviderUnavailable.
    The three are public attributes: tests may flip them between calls. The
    simulation never answers PENDING.

    What the provider knows lives in ``store``; without one, an
    ``InMemoryVendStore`` remembers the outcome of the last
    ``max_remembered_requests`` request ids. Providers given one shared store
    behave as one provider.
    """

    def __init__(
        self,
        *,
        tariff_minor_per_kwh: int,
        minimum_amount_minor: int,
        maximum_amount_minor: int,
        failure_rate: float = 0.0,
        timeout_rate: float = 0.0,
        latency_seconds: float = 0.0,
        unavailable: bool = False,
        token_key: bytes = DEFAULT_TOKEN_KEY,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] | None = None,
        max_remembered_requests: int = DEFAULT_REMEMBERED_REQUESTS,
        store: VendStore | None = None,
    ) -> None:
        if tariff_minor_per_kwh <= 0:
            raise ValueError("the tariff must be positive")
        if not 0 < minimum_amount_minor <= maximum_amount_minor:
            raise ValueError("amount limits must satisfy 0 < minimum <= maximum")
        if maximum_amount_minor * 10 // tariff_minor_per_kwh > sts.MAX_TRANSFER_AMOUNT:
            raise ValueError("the maximum amount buys more energy than one token can carry")
        for name, rate in (("failure_rate", failure_rate), ("timeout_rate", timeout_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if latency_seconds < 0:
            raise ValueError("latency_seconds cannot be negative")
        if not token_key:
            raise ValueError("token_key must not be empty")
        self.unavailable = unavailable
        self.failure_rate = failure_rate
        self.timeout_rate = timeout_rate
        self._tariff_minor_per_kwh = tariff_minor_per_kwh
        self._minimum_amount_minor = minimum_amount_minor
        self._maximum_amount_minor = maximum_amount_minor
        self.latency_seconds = latency_seconds
        self._token_key = token_key
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock if clock is not None else _utc_now
        self._store: VendStore = (
            store
            if store is not None
            else InMemoryVendStore(max_remembered_requests, rng=self._rng)
        )

    async def verify(self, meter_number: str) -> MeterInfo:
        self._require_reachable()
        return self._meter_info(self._known_meter(meter_number))

    async def vend(self, request_id: str, meter_number: str, amount_minor: int) -> VendResult:
        self._require_reachable()
        meter = self._known_meter(meter_number)
        # The provider acts before its answer travels back: a caller that gives
        # up during the latency leaves a vend that happened, as in real life.
        record, made_here = await self._settle(request_id, meter, amount_minor)
        answer_lost = (
            made_here and record.status is VendStatus.SUCCESS and self._happens(self.timeout_rate)
        )
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)
        if answer_lost:
            raise VendOutcomeUnknown(request_id)
        if record.result is None:
            raise VendFailed(record.reason or "vend failed")
        return record.result

    async def requery(self, request_id: str) -> RequeryResult:
        self._require_reachable()
        record = await self._store.find(request_id)
        if record is None:
            return RequeryResult(status=VendStatus.NOT_FOUND, result=None, reason=None)
        return RequeryResult(status=record.status, result=record.result, reason=record.reason)

    async def close(self) -> None:
        """Nothing to release: the simulation holds no connections of its own."""

    def _require_reachable(self) -> None:
        if self.unavailable:
            raise ProviderUnavailable("the electricity provider is unavailable")

    def _known_meter(self, meter_number: str) -> str:
        meter = normalize_meter_number(meter_number)
        if meter.startswith(("000", "Z")):
            raise MeterNotFound(meter)
        return meter

    def _meter_info(self, meter: str) -> MeterInfo:
        digest = hashlib.sha256(meter.encode("ascii")).digest()
        house_number = 1 + int.from_bytes(digest[2:4], "big") % 120
        return MeterInfo(
            meter_number=meter,
            meter_type="prepaid",
            customer_name=(
                f"{_FIRST_NAMES[digest[0] % len(_FIRST_NAMES)]} "
                f"{_SURNAMES[digest[1] % len(_SURNAMES)]}"
            ),
            address=(
                f"{house_number} {_STREETS[digest[4] % len(_STREETS)]}, "
                f"{_AREAS[digest[5] % len(_AREAS)]}"
            ),
            minimum_amount_minor=self._minimum_amount_minor,
            maximum_amount_minor=self._maximum_amount_minor,
        )

    async def _settle(
        self, request_id: str, meter: str, amount_minor: int
    ) -> tuple[VendRecord, bool]:
        """The record for this request id, and whether this call made it.

        The first record stored wins: callers racing on one request id, in
        this process or in others sharing the store, all answer the stored
        outcome, and a loser's attempt is never answered.
        """
        # Attempted first and looked up only when another record won: a
        # request id comes back rarely (a re-vend, a race), and a fresh vend
        # then costs the store two writes, not a read and two writes.
        attempted = await self._attempt(request_id, meter, amount_minor)
        if await self._store.add(request_id, attempted):
            return attempted, True
        stored = await self._store.find(request_id)
        if stored is None:  # pragma: no cover - stored by another, forgotten since
            raise VendOutcomeUnknown(request_id)
        if (stored.meter_number, stored.amount_minor) != (meter, amount_minor):
            raise VendFailed(REQUEST_ID_REUSED)
        return stored, False

    async def _attempt(self, request_id: str, meter: str, amount_minor: int) -> VendRecord:
        def failed(reason: str) -> VendRecord:
            return VendRecord(meter, amount_minor, VendStatus.FAILED, reason=reason)

        if amount_minor < self._minimum_amount_minor:
            return failed(
                f"amount {format_minor(amount_minor)} is below the minimum "
                f"{format_minor(self._minimum_amount_minor)}"
            )
        if amount_minor > self._maximum_amount_minor:
            return failed(
                f"amount {format_minor(amount_minor)} is above the maximum "
                f"{format_minor(self._maximum_amount_minor)}"
            )
        units_tenths_kwh = amount_minor * 10 // self._tariff_minor_per_kwh
        if units_tenths_kwh == 0:
            return failed(f"amount {format_minor(amount_minor)} buys less than 0.1 kWh")
        if self._happens(self.failure_rate):
            return failed("the provider declined the vend (simulated failure)")
        try:
            token = sts.generate_token(
                units_tenths_kwh,
                await self._issue_time(meter),
                self._rng.randrange(16),
                self.decoder_key(meter),
            )
        except ValueError as exc:
            return failed(f"no token could be generated: {exc}")
        result = VendResult(
            request_id=request_id,
            token=token,
            units=sts.units_for_amount(amount_minor, self._tariff_minor_per_kwh),
            tariff_minor_per_kwh=self._tariff_minor_per_kwh,
            receipt_number=await self._new_receipt_number(),
        )
        return VendRecord(meter, amount_minor, VendStatus.SUCCESS, result=result)

    async def _issue_time(self, meter: str) -> datetime:
        """Now, or one minute past this meter's last token when that is later.

        A meter accepts each token identifier once and only ever rising ones,
        so two tokens for one meter in the same minute must not share it; real
        vending servers step the identifier forward the same way. The store
        steps it, so the rule holds across every provider sharing the store.
        """
        now = self._clock()
        now_minute = sts.token_identifier(now)
        minute = await self._store.next_token_minute(meter, now_minute)
        if minute == now_minute:
            return now
        return sts.BASE_DATE_2014 + timedelta(minutes=minute)

    def decoder_key(self, meter: str) -> bytes:
        # Each meter decodes with a key of its own, as STS decoder keys are.
        return self._token_key + b":" + meter.encode()

    def _happens(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability

    async def _new_receipt_number(self) -> str:
        number = await self._store.next_receipt_number()
        return f"SIM-{number % _RECEIPT_NUMBERS:012d}"


def _minor_units(value: Decimal, setting: str) -> int:
    minor = value * 100
    integral = minor.to_integral_value()
    if minor != integral:
        raise ConfigurationError(f"VOLTPAY_PROVIDER__{setting.upper()}: at most 2 decimal places")
    return int(integral)


def build_provider(
    settings: ProviderSettings, store: VendStore | None = None
) -> ElectricityProvider:
    """The configured provider (today always the simulated one).

    ``store`` is where the simulated provider keeps its state when
    ``settings.state`` is "database": the one every daemon shares. With
    "memory" the provider keeps it in this process and forgets it at exit.
    ``settings.vend_timeout_seconds`` is the caller's to enforce.
    """
    minimum = _minor_units(settings.minimum_amount, "minimum_amount")
    maximum = _minor_units(settings.maximum_amount, "maximum_amount")
    if minimum > maximum:
        raise ConfigurationError(
            "VOLTPAY_PROVIDER__MINIMUM_AMOUNT: must not exceed VOLTPAY_PROVIDER__MAXIMUM_AMOUNT"
        )
    try:
        return SimulatedProvider(
            tariff_minor_per_kwh=_minor_units(settings.tariff_per_kwh, "tariff_per_kwh"),
            minimum_amount_minor=minimum,
            maximum_amount_minor=maximum,
            failure_rate=settings.failure_rate,
            timeout_rate=settings.timeout_rate,
            latency_seconds=settings.latency_seconds,
            unavailable=settings.unavailable,
            store=store if settings.state == "database" else None,
        )
    except ValueError as exc:
        raise ConfigurationError(f"VOLTPAY_PROVIDER: {exc}") from None

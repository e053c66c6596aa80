from __future__ import annotations

import asyncio
import gc
import random
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from voltpay.bridges.electricity import (
    REQUEST_ID_REUSED,
    ElectricityProvider,
    InvalidMeterNumber,
    MeterNotFound,
    ProviderUnavailable,
    SimulatedProvider,
    VendFailed,
    VendOutcomeUnknown,
    VendStatus,
    build_provider,
)
from voltpay.config.settings import ConfigurationError, ProviderSettings
from voltpay.domain import sts

KEY = b"provider-test-key"
NOW = datetime(2026, 11, 27, 9, 42, tzinfo=UTC)
TARIFF = 6800  # 68.00 per kWh
MINIMUM = 1000  # 10.00
MAXIMUM = 50_000_000  # 500,000.00
METER = "45012345678"


def make_provider(**overrides: Any) -> SimulatedProvider:
    options: dict[str, Any] = {
        "tariff_minor_per_kwh": TARIFF,
        "minimum_amount_minor": MINIMUM,
        "maximum_amount_minor": MAXIMUM,
        "token_key": KEY,
        "rng": random.Random(1234),
        "clock": lambda: NOW,
    }
    options.update(overrides)
    return SimulatedProvider(**options)


@pytest.mark.parametrize("meter", ["45012345678", "A123456", "B000001", "00112345678"])
async def test_verify_accepts_both_meter_number_forms(meter: str) -> None:
    info = await make_provider().verify(meter)

    assert info.meter_number == meter
    assert info.meter_type == "prepaid"
    assert info.customer_name
    assert info.address
    assert info.minimum_amount_minor == MINIMUM
    assert info.maximum_amount_minor == MAXIMUM


async def test_a_lower_case_legacy_letter_is_answered_in_upper_case() -> None:
    info = await make_provider().verify("a123456")

    assert info.meter_number == "A123456"


@pytest.mark.parametrize(
    "meter",
    [
        "",
        "4501234567",  # 10 digits
        "450123456789",  # 12 digits
        "AB12345",
        "A12345",
        "A1234567",
        "1123456",
        "A-123456",
        " 45012345678",
        "45012345678\n",
        "4501234567a",
        "\uff14" * 11,  # full-width digits pass str.isdigit
    ],
)
async def test_anything_else_is_an_invalid_meter_number(meter: str) -> None:
    provider = make_provider()

    with pytest.raises(InvalidMeterNumber):
        await provider.verify(meter)
    with pytest.raises(InvalidMeterNumber):
        await provider.vend("request-1", meter, 10000)


@pytest.mark.parametrize("meter", ["00000000000", "00012345678", "Z999999", "Z000000", "z123456"])
async def test_the_documented_numbers_are_not_found(meter: str) -> None:
    provider = make_provider()

    with pytest.raises(MeterNotFound):
        await provider.verify(meter)
    with pytest.raises(MeterNotFound):
        await provider.vend("request-1", meter, 10000)
    assert (await provider.requery("request-1")).status is VendStatus.NOT_FOUND


async def test_customer_details_are_derived_from_the_meter_number() -> None:
    first = await make_provider(rng=random.Random(1)).verify(METER)
    second = await make_provider(rng=random.Random(2)).verify(METER)
    others = [await make_provider().verify(f"450{n:08d}") for n in range(20)]

    assert (first.customer_name, first.address) == (second.customer_name, second.address)
    assert len({info.customer_name for info in others}) > 5
    assert len({info.address for info in others}) > 5


async def test_a_vend_returns_a_token_for_the_units_paid_for() -> None:
    provider = make_provider()

    result = await provider.vend("request-1", METER, 10000)

    assert result.request_id == "request-1"
    assert result.units == Decimal("1.47")
    assert result.tariff_minor_per_kwh == TARIFF
    assert re.fullmatch(r"SIM-[0-9]{12}", result.receipt_number)
    assert re.fullmatch(r"[0-9]{20}", result.token)
    decoded = sts.decode_token(result.token, provider.decoder_key(METER))
    assert decoded.crc_ok
    assert decoded.units_tenths_kwh == 14  # 1.47 kWh rounded down to tenths
    assert decoded.tid_minutes == sts.token_identifier(NOW)


async def test_the_same_request_id_vends_once() -> None:
    provider = make_provider()

    first = await provider.vend("request-1", METER, 10000)
    again = await provider.vend("request-1", METER, 10000)
    other = await provider.vend("request-2", METER, 10000)

    assert again == first
    assert other.receipt_number != first.receipt_number
    assert other.token != first.token


async def test_concurrent_vends_of_one_request_id_vend_once() -> None:
    provider = make_provider(latency_seconds=0.02)

    results = await asyncio.gather(*(provider.vend("request-1", METER, 10000) for _ in range(5)))

    assert len({result.receipt_number for result in results}) == 1


async def test_a_caller_that_stops_waiting_leaves_the_vend_done() -> None:
    provider = make_provider(latency_seconds=0.05)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.vend("request-1", METER, 10000), timeout=0.005)

    requery = await provider.requery("request-1")
    assert requery.status is VendStatus.SUCCESS
    assert requery.result is not None


@pytest.mark.parametrize(("meter", "amount"), [(METER, 20000), ("A123456", 10000)])
async def test_reusing_a_request_id_for_another_vend_fails(meter: str, amount: int) -> None:
    provider = make_provider()
    original = await provider.vend("request-1", METER, 10000)

    with pytest.raises(VendFailed) as failure:
        await provider.vend("request-1", meter, amount)

    assert failure.value.reason == REQUEST_ID_REUSED
    requery = await provider.requery("request-1")
    assert requery.status is VendStatus.SUCCESS
    assert requery.result == original


async def test_a_confirmed_failure_is_reported_by_requery() -> None:
    provider = make_provider(failure_rate=1.0)

    with pytest.raises(VendFailed) as failure:
        await provider.vend("request-1", METER, 10000)

    requery = await provider.requery("request-1")
    assert requery.status is VendStatus.FAILED
    assert requery.result is None
    assert requery.reason == failure.value.reason


async def test_a_failed_request_id_stays_failed() -> None:
    provider = make_provider(failure_rate=1.0)
    with pytest.raises(VendFailed):
        await provider.vend("request-1", METER, 10000)
    provider.failure_rate = 0.0

    with pytest.raises(VendFailed):
        await provider.vend("request-1", METER, 10000)
    assert (await provider.requery("request-1")).status is VendStatus.FAILED


async def test_a_lost_answer_still_vended_and_requery_says_so() -> None:
    provider = make_provider(timeout_rate=1.0)

    with pytest.raises(VendOutcomeUnknown):
        await provider.vend("request-1", METER, 10000)

    requery = await provider.requery("request-1")
    assert requery.status is VendStatus.SUCCESS
    assert requery.reason is None
    assert requery.result is not None
    assert sts.decode_token(requery.result.token, provider.decoder_key(METER)).crc_ok
    # Retrying the same request id answers the vend that already happened.
    assert await provider.vend("request-1", METER, 10000) == requery.result


async def test_an_unknown_request_id_is_not_found() -> None:
    requery = await make_provider().requery("never-sent")

    assert requery.status is VendStatus.NOT_FOUND
    assert requery.result is None
    assert requery.reason is None


@pytest.mark.parametrize("amount", [MINIMUM, MAXIMUM])
async def test_the_amount_limits_are_inclusive(amount: int) -> None:
    result = await make_provider().vend("request-1", METER, amount)

    assert result.units == sts.units_for_amount(amount, TARIFF)


@pytest.mark.parametrize(
    ("amount", "reason"),
    [(MINIMUM - 1, "below the minimum 10.00"), (MAXIMUM + 1, "above the maximum 500000.00")],
)
async def test_amounts_outside_the_limits_fail(amount: int, reason: str) -> None:
    provider = make_provider()

    with pytest.raises(VendFailed, match=re.escape(reason)):
        await provider.vend("request-1", METER, amount)

    assert (await provider.requery("request-1")).status is VendStatus.FAILED


async def test_an_amount_too_small_for_a_tenth_of_a_kwh_fails() -> None:
    provider = make_provider(minimum_amount_minor=100)

    with pytest.raises(VendFailed, match=re.escape("less than 0.1 kWh")):
        await provider.vend("request-1", METER, 679)


async def test_an_unavailable_provider_does_nothing() -> None:
    provider = make_provider(unavailable=True)

    with pytest.raises(ProviderUnavailable):
        await provider.verify(METER)
    with pytest.raises(ProviderUnavailable):
        await provider.vend("request-1", METER, 10000)
    with pytest.raises(ProviderUnavailable):
        await provider.requery("request-1")

    provider.unavailable = False
    assert (await provider.requery("request-1")).status is VendStatus.NOT_FOUND


async def test_only_the_most_recent_request_ids_are_remembered() -> None:
    provider = make_provider(max_remembered_requests=2)
    for request_id in ("request-1", "request-2", "request-3"):
        await provider.vend(request_id, METER, 10000)

    assert (await provider.requery("request-1")).status is VendStatus.NOT_FOUND
    assert (await provider.requery("request-2")).status is VendStatus.SUCCESS
    assert (await provider.requery("request-3")).status is VendStatus.SUCCESS


async def test_remembered_requests_leave_the_garbage_collector_nothing_to_walk() -> None:
    """20,000 remembered requests must not be 20,000 more objects that every
    full collection of a busy daemon walks."""
    provider = make_provider(failure_rate=0.5, rng=random.Random(7))
    await provider.vend("request-0", METER, 10000)
    gc.collect()
    tracked_before = len(gc.get_objects())
    outcomes: dict[str, VendStatus] = {}
    for number in range(1, 501):
        request_id = f"request-{number}"
        try:
            await provider.vend(request_id, METER, 10000)
            outcomes[request_id] = VendStatus.SUCCESS
        except VendFailed:
            outcomes[request_id] = VendStatus.FAILED
    gc.collect()

    assert len(gc.get_objects()) - tracked_before < 50
    assert set(outcomes.values()) == {VendStatus.SUCCESS, VendStatus.FAILED}
    for request_id, status in outcomes.items():
        answer = await provider.requery(request_id)
        assert answer.status is status
        if status is VendStatus.SUCCESS:
            assert answer.result == await provider.vend(request_id, METER, 10000)
            assert answer.result is not None and answer.result.request_id == request_id
        else:
            assert answer.reason == "the provider declined the vend (simulated failure)"


@pytest.mark.parametrize(
    "overrides",
    [
        {"tariff_minor_per_kwh": 0},
        {"minimum_amount_minor": 0},
        {"minimum_amount_minor": MAXIMUM + 1},
        {"failure_rate": 1.5},
        {"timeout_rate": -0.1},
        {"latency_seconds": -1.0},
        {"token_key": b""},
        {"tariff_minor_per_kwh": 1},  # the maximum would not fit in one token
    ],
)
def test_impossible_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_provider(**overrides)


async def test_build_provider_converts_the_settings_to_minor_units() -> None:
    provider: ElectricityProvider = build_provider(ProviderSettings())

    info = await provider.verify(METER)
    result = await provider.vend("request-1", METER, 10000)
    await provider.close()

    assert (info.minimum_amount_minor, info.maximum_amount_minor) == (1000, 50_000_000)
    assert result.tariff_minor_per_kwh == 6800
    assert result.units == Decimal("1.47")


def test_build_provider_carries_the_test_switches() -> None:
    provider = build_provider(ProviderSettings(unavailable=True))

    assert isinstance(provider, SimulatedProvider)
    assert provider.unavailable is True


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (ProviderSettings(tariff_per_kwh=Decimal("68.005")), "TARIFF_PER_KWH"),
        (
            ProviderSettings(minimum_amount=Decimal("600000"), maximum_amount=Decimal("500000")),
            "MINIMUM_AMOUNT",
        ),
    ],
)
def test_build_provider_names_a_bad_setting(settings: ProviderSettings, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        build_provider(settings)


async def test_tokens_for_one_meter_never_repeat_within_a_minute() -> None:
    provider = make_provider()
    key = provider.decoder_key(METER)
    tokens = [(await provider.vend(f"request-{n}", METER, 10000)).token for n in range(40)]
    assert len(set(tokens)) == 40
    identifiers = [sts.decode_token(token, key).tid_minutes for token in tokens]
    assert identifiers == sorted(identifiers)
    assert len(set(identifiers)) == 40


async def test_each_meter_decodes_with_its_own_key() -> None:
    provider = make_provider()
    token = (await provider.vend("request-1", METER, 10000)).token
    assert sts.decode_token(token, provider.decoder_key(METER)).crc_ok
    assert provider.decoder_key(METER) != provider.decoder_key("A123456")


@pytest.mark.parametrize(("state", "shared"), [("database", True), ("memory", False)])
def test_the_provider_keeps_its_state_where_the_setting_says(state: str, shared: bool) -> None:
    from voltpay.bridges.electricity import InMemoryVendStore, build_provider

    class SharedStore(InMemoryVendStore):
        """Stands for the database's store."""

    provider = build_provider(ProviderSettings(state=state), store=SharedStore())
    assert isinstance(provider, SimulatedProvider)
    assert isinstance(provider._store, SharedStore) is shared

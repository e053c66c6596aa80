"""The wallets agent: a credit lands in the wallet with its event, or is
refused with nothing written."""

from __future__ import annotations

import uuid

import pytest

from tests.agents.conftest import Agents, Payer, balance, events
from voltpay.domain.errors import BalanceLimitReached, WalletNotFound
from voltpay.domain.wallets import MAX_BALANCE_MINOR


async def test_adding_funds_credits_the_wallet_and_tells_the_new_balance(agents: Agents) -> None:
    payer = await agents.payer()

    first = await agents.add_funds(payer, 250_00)
    second = await agents.add_funds(payer, 49_99)

    assert (first.wallet_id, first.balance_minor) == (payer.wallet_id, 250_00)
    assert second.balance_minor == 299_99
    assert first.transaction_id != second.transaction_id
    assert await balance(payer) == 299_99
    assert await events() == ["user_registered", "wallet_funded", "wallet_funded"]


async def test_funds_for_a_wallet_that_is_not_the_callers_are_refused(agents: Agents) -> None:
    owner = await agents.payer()
    stranger = await agents.payer()

    with pytest.raises(WalletNotFound):
        await agents.add_funds(Payer(stranger.user_id, owner.wallet_id), 10_00)
    with pytest.raises(WalletNotFound):
        await agents.add_funds(Payer(owner.user_id, uuid.uuid4()), 10_00)

    assert await balance(owner) == 0
    assert "wallet_funded" not in await events()


async def test_a_credit_past_what_a_wallet_holds_is_refused(agents: Agents) -> None:
    payer = await agents.payer(MAX_BALANCE_MINOR - 10)

    with pytest.raises(BalanceLimitReached):
        await agents.add_funds(payer, 11)

    assert await balance(payer) == MAX_BALANCE_MINOR - 10
    assert (await agents.add_funds(payer, 10)).balance_minor == MAX_BALANCE_MINOR

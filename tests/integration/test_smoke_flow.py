from __future__ import annotations

from tests.client import Api


async def test_a_payment_walks_through(api: Api) -> None:
    ada = await api.customer(funds="500.50")
    bill = await api.bill(ada, "100.00")
    assert bill.status == 201, bill.body
    paid = await api.pay(ada, bill.body["billId"])
    assert paid.status == 200, paid.body
    assert paid.body["status"] == "paid"
    assert paid.body["walletBalance"] == "400.50"

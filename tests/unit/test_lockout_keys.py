"""Which part of a client address a lockout budget is kept for (challenge/lockout.py)."""

from __future__ import annotations

import pytest

from challenge.lockout import Lockout, budget_address


@pytest.mark.parametrize(
    ("address", "budget"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
        ("", ""),
        ("not-an-address", "not-an-address"),
    ],
)
def test_budget_address(address: str, budget: str) -> None:
    assert budget_address(address) == budget


def test_keys_of_one_ipv6_64_are_equal_and_of_the_next_differ() -> None:
    assert Lockout.key("scep-a", "2001:db8:1:2::1") == Lockout.key("scep-a", "2001:db8:1:2::9:8")
    assert Lockout.key("scep-a", "2001:db8:1:2::1") != Lockout.key("scep-a", "2001:db8:1:3::1")
    assert Lockout.address_key("2001:db8:1:2::1") == Lockout.address_key("2001:db8:1:2:abcd::1")
    assert Lockout.address_key("192.0.2.1") != Lockout.address_key("192.0.2.2")

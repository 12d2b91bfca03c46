"""Address-book fields for DEX venue discovery: factories, quotes, fee tiers, threshold (no chain)."""
from __future__ import annotations

import pytest

from defirisk.addressbook import (
    DEFAULT_MIN_VENUE_QUOTE_USD, DEFAULT_V3_FEE_TIERS, load_book, parse_book,
)
from defirisk.errors import InputError

TOKENS = {"WETH": {"address": "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "decimals": 18},
          "USDC": {"address": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "decimals": 6},
          "DAI": {"address": "0x6B175474E89094C44Da98b954EedeAC495271d0F", "decimals": 18}}
V2 = "0x5C69bEe701ef814a2B6a3EDD4B1652CB9cc5aA6f"
V3 = "0x1F98431c8aD98523631AE4a59f267346ea31F984"


def _book(**extra):
    return {"chain_id": 1, "tokens": TOKENS, "uniswap_v2": {"factory": V2}, "uniswap_v3": {"factory": V3}, **extra}


def test_mainnet_book_names_the_uniswap_factories():
    b = load_book("mainnet")
    # Uniswap's deployment docs: V2 factory and V3 factory on Ethereum mainnet.
    assert b.v2_factory == V2 and b.v3_factory == V3
    assert b.venue_quotes == ("USDC", "USDT", "DAI")
    assert b.v3_fee_tiers == (100, 500, 3000, 10000) == DEFAULT_V3_FEE_TIERS
    assert b.min_venue_quote_usd == DEFAULT_MIN_VENUE_QUOTE_USD == 100_000


def test_defaults_take_the_stablecoins_the_book_has():
    b = parse_book(_book())
    assert b.venue_quotes == ("USDC", "DAI")  # no USDT in this book
    assert parse_book({"chain_id": 1, "tokens": TOKENS}).v2_factory is None


def test_book_sets_quotes_tiers_threshold_or_turns_discovery_off():
    b = parse_book(_book(venue_discovery={"quotes": ["DAI"], "v3_fee_tiers": [500], "min_quote_usd": 5}))
    assert b.venue_quotes == ("DAI",) and b.v3_fee_tiers == (500,) and b.min_venue_quote_usd == 5.0
    off = parse_book(_book(venue_discovery=False))
    assert off.v2_factory is None and off.v3_factory is None


@pytest.mark.parametrize("disc, field", [
    ({"quotes": ["FRAX"]}, "venue_discovery.quotes"),
    ({"quotes": "USDC"}, "venue_discovery.quotes"),
    ({"v3_fee_tiers": [0]}, "venue_discovery.v3_fee_tiers"),
    ({"v3_fee_tiers": [True]}, "venue_discovery.v3_fee_tiers"),
    ({"min_quote_usd": -1}, "venue_discovery.min_quote_usd"),
    ({"min_quote_usd": float("nan")}, "venue_discovery.min_quote_usd"),
    ("yes", "venue_discovery"),
])
def test_bad_discovery_settings_name_the_field(disc, field):
    with pytest.raises(InputError, match=field.replace(".", r"\.")) as exc:
        parse_book(_book(venue_discovery=disc), "my-book.json")
    assert "my-book.json" in str(exc.value)


def test_bad_factory_address_names_the_field():
    with pytest.raises(InputError, match=r"uniswap_v3\.factory"):
        parse_book({**_book(), "uniswap_v3": {"factory": "0x1234"}})

"""Chainlink-compatible price feeds read at the pinned block.

A feed answers `latestRoundData()` (answer scaled by 10**decimals()). The reading keeps the raw
integers and the age of the answer (block timestamp - updatedAt) so a stale feed is visible in the
snapshot; conversion to a float USD price happens once, here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from defirisk.chain.abi import interface
from defirisk.chain.multicall import Call, Multicaller
from defirisk.errors import ChainError

FEED = interface("ChainlinkAggregatorV3")


@dataclass(frozen=True)
class FeedReading:
    symbol: str
    feed: str
    answer: int  # raw integer answer
    decimals: int
    updated_at: int  # unix seconds
    round_id: int
    age_s: int  # seconds between updatedAt and the pinned block's timestamp

    @property
    def price(self) -> float:
        return self.answer / 10 ** self.decimals


def feed_calls(feeds: Mapping[str, str], protocol: str = "oracle") -> list[Call]:
    """Two calls per feed: decimals() and latestRoundData()."""
    out = []
    for sym, addr in feeds.items():
        out.append(Call(addr, FEED.fn("decimals"), label=f"{protocol} feed {sym}"))
        out.append(Call(addr, FEED.fn("latestRoundData"), label=f"{protocol} feed {sym}"))
    return out


def decode_feeds(feeds: Mapping[str, str], results: list, block_timestamp: int) -> dict[str, FeedReading]:
    out: dict[str, FeedReading] = {}
    for i, (sym, addr) in enumerate(feeds.items()):
        dec, (round_id, answer, _started, updated, _answered) = results[2 * i], results[2 * i + 1]
        if answer <= 0:
            raise ChainError(f"price feed {sym} at {addr} reports a non-positive answer {answer}")
        out[sym] = FeedReading(sym, addr, int(answer), int(dec), int(updated), int(round_id),
                               max(0, int(block_timestamp) - int(updated)))
    return out


def read_feeds(mc: Multicaller, feeds: Mapping[str, str], block_timestamp: int) -> dict[str, FeedReading]:
    """Read every feed in one multicall batch."""
    return decode_feeds(feeds, mc.run(feed_calls(feeds)), block_timestamp)


def read_feeds_lenient(mc: Multicaller, feeds: Mapping[str, str],
                       block_timestamp: int) -> tuple[dict[str, FeedReading], dict[str, str]]:
    """Like `read_feeds`, but a feed that reverts, answers garbage or answers <= 0 is reported in the
    second dict (symbol -> reason) instead of raising, so the caller can drop only what needs it."""
    calls = [Call(c.target, c.fn, c.args, required=False, gas=c.gas, label=c.label) for c in feed_calls(feeds)]
    results = mc.run(calls)
    good: dict[str, FeedReading] = {}
    bad: dict[str, str] = {}
    for i, (sym, addr) in enumerate(feeds.items()):
        dec, round_data = results[2 * i], results[2 * i + 1]
        if dec is None or round_data is None:
            bad[sym] = f"feed {addr}: decimals() or latestRoundData() reverted or did not decode"
            continue
        try:
            good.update(decode_feeds({sym: addr}, [dec, round_data], block_timestamp))
        except ChainError as exc:
            bad[sym] = str(exc)
    return good, bad

"""DEX depth at the pinned block, turned into the snapshot's venue dicts (venues.json shapes).

- Uniswap V2 pair -> {"kind": "constant_product", "base_reserve", "quote_reserve" (whole tokens),
  "fee": 0.003, "quote": SYMBOL, "pair": address}.
- Uniswap V3 pool -> {"kind": "uniswap_v3", "sqrt_price_x96" (string), "liquidity" (string), "tick",
  "fee" (fraction), "base_is_token0", "base_decimals", "quote_decimals", "ticks": [[tick,
  liquidityNet string], ...], "quote": SYMBOL, "pool": address}. Initialized ticks are found by reading every
  `tickBitmap` word of the pool's whole tick range (one batch), then `ticks(t)` for each set bit —
  exact, with no assumption about where liquidity sits.
Big integers are strings because JSON readers lose precision above 2**53.

Discovery (`discover_pools`, `quote_depths`): the factories are asked, at the pinned block, for the
V2 pair and the V3 pool of each fee tier of every (base, quote) pair; each pool found is then sized
by the quote tokens it holds (V2 reserve; V3 `balanceOf(pool)`, an upper bound on what selling the
base into it can return) so the caller can drop dust pools.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from defirisk.chain.abi import interface
from defirisk.chain.multicall import Call, Multicaller
from defirisk.errors import ChainError

V2_PAIR = interface("UniswapV2Pair")
V3_POOL = interface("UniswapV3Pool")
V2_FACTORY = interface("UniswapV2Factory")
V3_FACTORY = interface("UniswapV3Factory")
ERC20 = interface("ERC20")
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
MIN_TICK, MAX_TICK = -887272, 887272
V2_FEE = 0.003  # Uniswap V2 charges 0.3% on input (997/1000)


@dataclass(frozen=True)
class TokenInfo:
    symbol: str
    address: str
    decimals: int


@dataclass(frozen=True)
class PoolRef:
    """A pool where `base` can be sold for `quote`. fee: hundredths of a bip (V2: 3000)."""

    kind: str  # "v2" | "v3"
    address: str
    base: TokenInfo
    quote: TokenInfo
    fee: int


def discover_pools(mc: Multicaller, bases: Sequence[TokenInfo], quotes: Sequence[TokenInfo], *,
                   v2_factory: str | None, v3_factory: str | None,
                   fee_tiers: Sequence[int] = (100, 500, 3000, 10000)) -> list[PoolRef]:
    """Every existing V2 pair / V3 pool between a base and a quote, in one multicall batch.

    The factories' lookups never revert on a real factory (a missing pool is the zero address), so
    a failing lookup is an error naming the factory: the book points at something else.
    """
    todo: list[tuple[str, TokenInfo, TokenInfo, int]] = []
    calls: list[Call] = []
    for b in bases:
        for q in quotes:
            if _same(b.address, q.address):
                continue
            if v2_factory:
                todo.append(("v2", b, q, 3000))
                calls.append(Call(v2_factory, V2_FACTORY.fn("getPair"), (b.address, q.address),
                                  label=f"uniswap-v2 factory {v2_factory}"))
            if v3_factory:
                for fee in fee_tiers:
                    todo.append(("v3", b, q, int(fee)))
                    calls.append(Call(v3_factory, V3_FACTORY.fn("getPool"), (b.address, q.address, int(fee)),
                                      label=f"uniswap-v3 factory {v3_factory}"))
    found = mc.run(calls) if calls else []
    return [PoolRef(kind, addr, b, q, fee) for (kind, b, q, fee), addr in zip(todo, found)
            if addr and not _same(addr, ZERO_ADDRESS)]


def quote_depths(mc: Multicaller, pools: Sequence[PoolRef]) -> list[int | None]:
    """Raw quote-token amount each pool holds (None when the pool cannot be read: treated as empty).

    V2: the quote reserve (`getReserves`, side from `token0`). V3: `quote.balanceOf(pool)` — every
    quote token the pool could pay out, in or out of range, so it bounds the sale from above."""
    calls: list[Call] = []
    for p in pools:
        lab = f"uniswap-{p.kind} pool {p.base.symbol}/{p.quote.symbol} {p.address}"
        if p.kind == "v2":
            calls += [Call(p.address, V2_PAIR.fn("token0"), required=False, label=lab),
                      Call(p.address, V2_PAIR.fn("getReserves"), required=False, label=lab)]
        else:
            calls += [Call(p.quote.address, ERC20.fn("balanceOf"), (p.address,), required=False, label=lab)]
    res = mc.run(calls) if calls else []
    out: list[int | None] = []
    i = 0
    for p in pools:
        if p.kind == "v2":
            token0, reserves = res[i], res[i + 1]
            i += 2
            if token0 is None or reserves is None:
                out.append(None)
            else:
                out.append(int(reserves[0] if _same(token0, p.quote.address) else reserves[1]))
        else:
            out.append(None if res[i] is None else int(res[i]))
            i += 1
    return out


def _same(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def read_v2_venue(mc: Multicaller, pair: str, base: TokenInfo, quote: TokenInfo) -> dict[str, Any]:
    """Constant-product venue for selling `base` into `quote` on a Uniswap V2 pair."""
    label = f"uniswap-v2 pair {base.symbol}/{quote.symbol}"
    token0, token1, (r0, r1, _ts) = mc.run([Call(pair, V2_PAIR.fn("token0"), label=label),
                                            Call(pair, V2_PAIR.fn("token1"), label=label),
                                            Call(pair, V2_PAIR.fn("getReserves"), label=label)])
    if _same(token0, base.address) and _same(token1, quote.address):
        rb, rq = r0, r1
    elif _same(token1, base.address) and _same(token0, quote.address):
        rb, rq = r1, r0
    else:
        raise ChainError(f"{label} at {pair} holds {token0}/{token1}, not {base.address}/{quote.address}")
    if rb == 0 or rq == 0:
        raise ChainError(f"{label} at {pair} has an empty reserve")
    return {"kind": "constant_product", "base_reserve": rb / 10 ** base.decimals,
            "quote_reserve": rq / 10 ** quote.decimals, "fee": V2_FEE, "quote": quote.symbol, "pair": pair}


def bitmap_words(tick_spacing: int) -> range:
    """All tickBitmap word positions a pool with `tick_spacing` can use."""
    return range((MIN_TICK // tick_spacing) >> 8, ((MAX_TICK // tick_spacing) >> 8) + 1)


def initialized_ticks(words: dict[int, int], tick_spacing: int) -> list[int]:
    """Ticks whose bit is set in the bitmap words (word position -> 256-bit word), ascending."""
    out = []
    for pos in sorted(words):
        w = words[pos]
        while w:
            low = w & -w
            bit = low.bit_length() - 1
            out.append((pos * 256 + bit) * tick_spacing)
            w ^= low
    return out


def read_v3_venue(mc: Multicaller, pool: str, base: TokenInfo, quote: TokenInfo) -> dict[str, Any]:
    """Concentrated-liquidity venue for selling `base` into `quote` on a Uniswap V3 pool."""
    label = f"uniswap-v3 pool {base.symbol}/{quote.symbol}"
    token0, token1, fee, spacing, liquidity, slot0 = mc.run(
        [Call(pool, V3_POOL.fn(n), label=label) for n in
         ("token0", "token1", "fee", "tickSpacing", "liquidity", "slot0")])
    if _same(token0, base.address) and _same(token1, quote.address):
        base_is_token0 = True
    elif _same(token1, base.address) and _same(token0, quote.address):
        base_is_token0 = False
    else:
        raise ChainError(f"{label} at {pool} holds {token0}/{token1}, not {base.address}/{quote.address}")
    sqrt_price, tick = slot0[0], slot0[1]
    if sqrt_price == 0:
        raise ChainError(f"{label} at {pool} is not initialized (sqrtPriceX96 = 0)")
    positions = list(bitmap_words(spacing))
    words = mc.run([Call(pool, V3_POOL.fn("tickBitmap"), (p,), label=label) for p in positions])
    ticks = initialized_ticks({p: w for p, w in zip(positions, words) if w}, spacing)
    infos = mc.run([Call(pool, V3_POOL.fn("ticks"), (t,), label=label) for t in ticks])
    tick_rows = [[t, str(info[1])] for t, info in zip(ticks, infos) if info[1] != 0]
    return {"kind": "uniswap_v3", "sqrt_price_x96": str(sqrt_price), "liquidity": str(liquidity),
            "tick": int(tick), "fee": fee / 1e6, "base_is_token0": base_is_token0,
            "base_decimals": base.decimals, "quote_decimals": quote.decimals, "ticks": tick_rows,
            "quote": quote.symbol, "pool": pool}


def v3_spot_price(venue: dict[str, Any]) -> float:
    """Price of the base token in whole quote tokens implied by a uniswap_v3 venue dict."""
    p01 = (int(venue["sqrt_price_x96"]) / 2 ** 96) ** 2  # token1 raw per token0 raw
    if venue["base_is_token0"]:
        return p01 * 10 ** (venue["base_decimals"] - venue["quote_decimals"])
    return (1 / p01) * 10 ** (venue["base_decimals"] - venue["quote_decimals"])

"""DEX depth at the pinned block, turned into the snapshot's venue dicts (venues.json shapes).

- Uniswap V2 pair -> {"kind": "constant_product", "base_reserve", "quote_reserve" (whole tokens),
  "fee": 0.003, "quote": SYMBOL, "pair": address}.
- Uniswap V3 pool -> {"kind": "uniswap_v3", "sqrt_price_x96" (string), "liquidity" (string), "tick",
  "fee" (fraction), "base_is_token0", "base_decimals", "quote_decimals", "ticks": [[tick,
  liquidityNet string], ...], "quote": SYMBOL, "pool": address}. Initialized ticks are found by reading every
  `tickBitmap` word of the pool's whole tick range (one batch), then `ticks(t)` for each set bit —
  exact, with no assumption about where liquidity sits.
Big integers are strings because JSON readers lose precision above 2**53.

Discovery (`discover_pairs`, `discover_pools`, `pool_balances`): the factories are asked, at the pinned
block, for the V2 pair and the V3 pool of each fee tier of every pair of tokens; each pool found is then
sized by the tokens it holds (V2 reserves; V3 `balanceOf(pool)` of each token, an upper bound on what
selling the other token into it can return) so the caller can drop dust pools.

Direction (`plan_cross_pools`, docs/readers.md "DEX venues"): a pool between two volatile assets is
listed once, under the asset liquidators sell into it. Assets are ranked by `route_key` (hops to a
stablecoin pool, then USD depth of their own stablecoin pools, deeper = nearer USD, then symbol); the
pool goes under the asset ranked further from USD and is quoted in the other. The rank is a strict
total order, so the cross venues cannot form a cycle.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

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

    def flipped(self) -> "PoolRef":
        """The same pool seen from the other side (base and quote swapped)."""
        return replace(self, base=self.quote, quote=self.base)


def discover_pairs(mc: Multicaller, pairs: Sequence[tuple[TokenInfo, TokenInfo]], *, v2_factory: str | None,
                   v3_factory: str | None, fee_tiers: Sequence[int] = (100, 500, 3000, 10000)) -> list[PoolRef]:
    """Every existing V2 pair / V3 pool of each (base, quote) token pair, in one multicall batch, in the
    order asked (per pair: V2, then the V3 fee tiers). The factories sort the two tokens themselves, so
    asking (a, b) also finds what (b, a) would; the caller asks each unordered pair once.

    The factories' lookups never revert on a real factory (a missing pool is the zero address), so
    a failing lookup is an error naming the factory: the book points at something else.
    """
    todo: list[tuple[str, TokenInfo, TokenInfo, int]] = []
    calls: list[Call] = []
    for b, q in pairs:
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


def discover_pools(mc: Multicaller, bases: Sequence[TokenInfo], quotes: Sequence[TokenInfo], *,
                   v2_factory: str | None, v3_factory: str | None,
                   fee_tiers: Sequence[int] = (100, 500, 3000, 10000)) -> list[PoolRef]:
    """Every existing V2 pair / V3 pool between a base and a quote (`discover_pairs` of bases x quotes)."""
    return discover_pairs(mc, [(b, q) for b in bases for q in quotes], v2_factory=v2_factory,
                          v3_factory=v3_factory, fee_tiers=fee_tiers)


def pool_balances(mc: Multicaller, pools: Sequence[PoolRef]) -> list[tuple[int | None, int | None]]:
    """Raw (base, quote) token amounts each pool holds; None for a side that cannot be read (treated as
    empty). V2: the reserves (`getReserves`, sides from `token0`). V3: `balanceOf(pool)` of each token —
    every token the pool could pay out, in or out of range, so it bounds a sale of the other from above."""
    calls: list[Call] = []
    for p in pools:
        lab = f"uniswap-{p.kind} pool {p.base.symbol}/{p.quote.symbol} {p.address}"
        if p.kind == "v2":
            calls += [Call(p.address, V2_PAIR.fn("token0"), required=False, label=lab),
                      Call(p.address, V2_PAIR.fn("getReserves"), required=False, label=lab)]
        else:
            calls += [Call(p.base.address, ERC20.fn("balanceOf"), (p.address,), required=False, label=lab),
                      Call(p.quote.address, ERC20.fn("balanceOf"), (p.address,), required=False, label=lab)]
    res = mc.run(calls) if calls else []
    out: list[tuple[int | None, int | None]] = []
    for i, p in enumerate(pools):
        a, b = res[2 * i], res[2 * i + 1]
        if p.kind == "v2":
            if a is None or b is None:
                out.append((None, None))
            else:
                r0, r1 = int(b[0]), int(b[1])
                out.append((r1, r0) if _same(a, p.quote.address) else (r0, r1))
        else:
            out.append((None if a is None else int(a), None if b is None else int(b)))
    return out


def quote_depths(mc: Multicaller, pools: Sequence[PoolRef]) -> list[int | None]:
    """Raw quote-token amount each pool holds (None when it cannot be read: treated as empty)."""
    return [q for _b, q in pool_balances(mc, pools)]


# ---------------------------------------------------------------------------------------------------
# Direction of pools between two volatile assets (pure; no chain access).
# ---------------------------------------------------------------------------------------------------
def usd_hops(usd_linked: Iterable[str], links: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Fewest pools from each asset to a stablecoin: 1 for an asset with a stablecoin pool of its own
    (`usd_linked`), k + 1 for a neighbour (over `links`, undirected) of an asset at k. Assets that reach
    no stablecoin are absent."""
    adj: dict[str, set[str]] = {}
    for a, b in links:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    hops = {s: 1 for s in usd_linked}
    todo = deque(sorted(hops))
    while todo:
        s = todo.popleft()
        for n in sorted(adj.get(s, ())):
            if n not in hops:
                hops[n] = hops[s] + 1
                todo.append(n)
    return hops


def route_key(sym: str, hops: Mapping[str, int], depth: Mapping[str, float]) -> tuple[float, float, str]:
    """Rank of an asset on the way to USD, lower = nearer: (hops to a stablecoin, minus the USD its own
    stablecoin pools hold, symbol). Distinct symbols make it a strict total order."""
    return (float(hops.get(sym, math.inf)), -float(depth.get(sym, 0.0)), sym)


def orient(a: str, b: str, hops: Mapping[str, int], depth: Mapping[str, float]) -> tuple[str, str]:
    """(base, quote) of a pool between volatile assets a and b: listed under the one further from USD."""
    return (a, b) if route_key(a, hops, depth) > route_key(b, hops, depth) else (b, a)


@dataclass(frozen=True)
class CrossPlan:
    """What `plan_cross_pools` decided, by index into its `pairs`."""

    direction: dict[int, tuple[str, str]]  # routed pools: (base, quote)
    dust: list[int] = field(default_factory=list)      # quote side below the threshold
    unrouted: list[int] = field(default_factory=list)  # neither asset reaches a stablecoin
    hops: dict[str, int] = field(default_factory=dict)


def plan_cross_pools(pairs: Sequence[tuple[str, str]], depth: Mapping[str, float], usd_linked: Iterable[str],
                     quote_usd: Callable[[int, str], float], min_usd: float,
                     sized: Sequence[bool] | None = None) -> CrossPlan:
    """Direction and dust test of pools between volatile assets.

    pairs[i]: the two assets of pool i. depth: USD the kept stablecoin pools of each asset hold;
    usd_linked: assets with at least one kept stablecoin pool (their own USD route). quote_usd(i, sym):
    USD value of what pool i holds of `sym`. sized[i] False: kept whatever its size (a pool the book
    lists). A pool is kept when the side it pays out in (its quote, after `orient`) holds at least
    `min_usd` and is not empty; dropping a pool can change which assets reach USD and so other pools'
    directions, so direction and test are repeated until nothing more is dropped. Pools whose assets
    reach no stablecoin at all are `unrouted` (a sale into them could never end in USD). Directions come
    from the total order `route_key`, so the routed pools form no cycle."""
    sized = [True] * len(pairs) if sized is None else list(sized)
    linked = set(usd_linked)
    live = list(range(len(pairs)))
    dust: list[int] = []
    while True:
        hops = usd_hops(linked, (pairs[i] for i in live))
        direction = {i: orient(pairs[i][0], pairs[i][1], hops, depth) for i in live}
        small = []
        for i in live:
            if not sized[i]:
                continue
            usd = quote_usd(i, direction[i][1])
            if not (usd >= min_usd and usd > 0):
                small.append(i)
        if not small:
            break
        dust += small
        gone = set(small)
        live = [i for i in live if i not in gone]
    unrouted = [i for i in live if pairs[i][0] not in hops]
    for i in unrouted:
        del direction[i]
    return CrossPlan(direction, sorted(dust), unrouted, hops)


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

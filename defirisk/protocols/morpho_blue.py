"""Morpho Blue reader: markets, borrowers and their positions at one pinned block.

- Markets: ids from `CreateMarket` logs (Morpho keeps no on-chain list), then `idToMarketParams`.
- Borrowers: `Borrow.onBehalf` logs per market. Every borrow share is minted by `borrow`, which emits
  Borrow with onBehalf, so this finds every account that can hold debt; `SupplyCollateral` alone never
  creates debt, so collateral-only accounts (no liquidation risk) are not read.
- Interest: `market(id)` is stored as of the market's last interaction. We accrue it to the pinned
  block's timestamp exactly as Morpho's `_accrueInterest` does: the IRM's `borrowRateView(params,
  market)` (same rate `borrowRate` would return, without its state write) compounded with the
  three-term Taylor expansion, in integer wad math; fee shares are added the same way. Borrowed
  assets are then `toAssetsUp(borrowShares)`, the rounding Morpho's health check uses.
- Oracle: `price()` = collateral price in loan units scaled by 1e36 * 10^(loanDec - collDec).
- A market whose oracle, IRM or token cannot be read is skipped with its reason (`read_markets`),
  never the whole read: Morpho markets are permissionless and some on mainnet are broken.
- Oracle sources (`read_oracle_sources`): a MorphoChainlinkOracleV2 (its vaults and four feeds) or the
  devnet's MorphoFeedOracle, probed at the pinned block, written per asset as a formula of market
  prices (docs/readers.md "Oracle sources"): e.g. a wstETH/WETH oracle with only a wstETH vault is
  `ratio` of WETH for the collateral and `market` for the loan.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import eth_abi

from defirisk.chain.abi import AbiDecodeError, checksum, interface
from defirisk.chain.logs import DiscoveryCache, LogScanner, discover, topic_address
from defirisk.chain.multicall import Call, Multicaller, RawCall
from defirisk.chain.rpc import BlockRef, RpcClient
from defirisk.errors import ChainError
from defirisk.markets import oracle_sources as osrc
from defirisk.markets.oracle_sources import FeedBook, FeedState, KnownFeed, OracleSpec

PROTOCOL = "morpho-blue"
MORPHO = interface("MorphoBlue")
IRM = interface("MorphoIrm")
ORACLE = interface("MorphoOracle")
ERC20 = interface("ERC20")
# morpho-org/morpho-blue-oracles: the Chainlink oracle factory's oracles (v1 has the same getters).
ORACLE_V2 = interface("MorphoChainlinkOracleV2")
# fixtures/contracts/devnet/MorphoFeedOracle.sol: the devnet's own collateral feed / loan feed oracle.
FEED_ORACLE = interface("DevnetMorphoFeedOracle")

WAD = 10 ** 18
ORACLE_PRICE_SCALE = 10 ** 36
VIRTUAL_SHARES = 10 ** 6
VIRTUAL_ASSETS = 1
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


# -- Morpho's integer math (pure) ----------------------------------------------------------------

def w_mul_down(x: int, y: int) -> int:
    return x * y // WAD


def w_taylor_compounded(x: int, n: int) -> int:
    first = x * n
    second = first * first // (2 * WAD)
    third = second * first // (3 * WAD)
    return first + second + third


def to_assets_up(shares: int, total_assets: int, total_shares: int) -> int:
    num = shares * (total_assets + VIRTUAL_ASSETS)
    den = total_shares + VIRTUAL_SHARES
    return (num + den - 1) // den


def to_shares_down(assets: int, total_assets: int, total_shares: int) -> int:
    return assets * (total_shares + VIRTUAL_SHARES) // (total_assets + VIRTUAL_ASSETS)


@dataclass(frozen=True)
class MarketState:
    total_supply_assets: int
    total_supply_shares: int
    total_borrow_assets: int
    total_borrow_shares: int
    last_update: int
    fee: int

    def as_tuple(self) -> tuple[int, ...]:
        return (self.total_supply_assets, self.total_supply_shares, self.total_borrow_assets,
                self.total_borrow_shares, self.last_update, self.fee)


def accrue(state: MarketState, borrow_rate_per_s: int, timestamp: int) -> MarketState:
    """Morpho's `_accrueInterest` applied to `state` up to `timestamp` with the IRM's rate."""
    elapsed = timestamp - state.last_update
    if elapsed <= 0:
        return state
    interest = w_mul_down(state.total_borrow_assets, w_taylor_compounded(borrow_rate_per_s, elapsed))
    tsa = state.total_supply_assets + interest
    tba = state.total_borrow_assets + interest
    tss = state.total_supply_shares
    if state.fee:
        fee_amount = w_mul_down(interest, state.fee)
        tss += to_shares_down(fee_amount, tsa - fee_amount, tss)
    return MarketState(tsa, tss, tba, state.total_borrow_shares, timestamp, state.fee)


def lif(lltv_wad: int) -> float:
    """Liquidation incentive factor: min(1.15, 1 / (1 - 0.3 * (1 - lltv)))."""
    lltv = lltv_wad / WAD
    return min(1.15, 1.0 / (1.0 - 0.3 * (1.0 - lltv)))


# -- reads ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MorphoMarket:
    id: str  # 0x-prefixed 32-byte hex
    loan_token: str
    collateral_token: str
    oracle: str
    irm: str
    lltv: int  # wad
    state: MarketState  # accrued to the pinned block
    oracle_price: int  # 1e36-scaled
    loan_decimals: int
    collateral_decimals: int
    loan_symbol: str
    collateral_symbol: str

    @property
    def params_tuple(self) -> tuple:
        return (self.loan_token, self.collateral_token, self.oracle, self.irm, self.lltv)


@dataclass(frozen=True)
class MorphoPosition:
    market_id: str
    account: str
    borrow_shares: int
    borrowed: int  # loan-token raw units, rounded up like Morpho's health check
    collateral: int  # collateral-token raw units

    def healthy(self, market: MorphoMarket) -> bool:
        """Morpho's `_isHealthy` at the market's oracle price."""
        max_borrow = w_mul_down(self.collateral * market.oracle_price // ORACLE_PRICE_SCALE, market.lltv)
        return max_borrow >= self.borrowed


def discover_markets(client: RpcClient, block: BlockRef, morpho: str, start_block: int, *,
                     cache: DiscoveryCache | None = None, scanner: LogScanner | None = None) -> list[str]:
    topic = MORPHO.event("CreateMarket").topic0
    res = discover(client, protocol=PROTOCOL, contract=morpho, stream="CreateMarket.id", topics=[topic],
                   extract=lambda log: [log["topics"][1].lower()], start_block=start_block, block=block,
                   cache=cache, scanner=scanner)
    return res.values


def discover_borrowers(client: RpcClient, block: BlockRef, morpho: str, start_block: int, *,
                       cache: DiscoveryCache | None = None, scanner: LogScanner | None = None,
                       progress: Callable[[int, int], None] | None = None) -> list[tuple[str, str]]:
    """(market id, borrower) pairs from Borrow(id indexed, caller, onBehalf indexed, receiver indexed)."""
    topic = MORPHO.event("Borrow").topic0
    res = discover(client, protocol=PROTOCOL, contract=morpho, stream="Borrow.id+onBehalf", topics=[topic],
                   extract=lambda log: [log["topics"][1].lower() + ":" + topic_address(log["topics"][2])],
                   start_block=start_block, block=block, cache=cache, scanner=scanner, progress=progress)
    out = []
    for v in res.values:
        mid, acct = v.split(":")
        out.append((mid, checksum(acct)))
    return out


@dataclass(frozen=True)
class SkippedMarket:
    """A market left out of a snapshot, and why (recorded in the manifest's `skipped_markets`)."""

    protocol: str
    id: str  # Morpho market id (0x-prefixed 32 bytes)
    market: str  # 'COLL/LOAN-LLTV' when the tokens could be named, else the id
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"protocol": self.protocol, "market": self.market, "id": self.id, "reason": self.reason}


@dataclass(frozen=True)
class MarketsRead:
    """`read_markets`' result: the markets read in full, and those skipped with a reason."""

    markets: tuple[MorphoMarket, ...]
    skipped: tuple[SkippedMarket, ...]


def _outcome(call: Call, ok: bool, data: bytes) -> tuple[Any, str | None]:
    """(decoded value, None) or (None, what went wrong) for one aggregate3 result."""
    if not ok:
        return None, f"{call.fn.name}() on {call.target} reverted{_reason(data)}"
    try:
        return call.fn.decode(data), None
    except AbiDecodeError:
        return None, f"{call.fn.name}() on {call.target} returned {len(data)} bytes that do not decode (no contract there?)"


def _reason(data: bytes) -> str:
    if data[:4] == bytes.fromhex("08c379a0"):  # Error(string)
        try:
            return f" ({eth_abi.decode(['string'], data[4:])[0]!r})"
        except Exception:  # a malformed reason is no reason
            return ""
    return ""


def lltv_text(lltv: int) -> str:
    text = f"{lltv / WAD:.6f}".rstrip("0")
    return text[2:] if text.startswith("0.") else text.replace(".", "")


def read_markets(client: RpcClient, mc: Multicaller, morpho: str, ids: Sequence[str], block: BlockRef, *,
                 known_symbols: Mapping[str, str] | None = None) -> MarketsRead:
    """Parameters, state accrued to the pinned block and oracle price of each market.

    Morpho Blue is permissionless: anyone can create a market with any oracle, IRM and tokens, and
    mainnet has many whose oracle reverts or whose token is not an ERC-20. One such market must not
    stop the snapshot, so a market whose oracle `price()`, IRM `borrowRateView` or token `decimals()`
    fails (or whose oracle answers 0) is returned in `skipped` with the reason, and the rest are read.
    The Morpho contract itself failing (no code, `idToMarketParams`/`market` reverting) is still an
    error: that is the wrong address, not one bad market.
    """
    if not client.get_code(morpho, block):
        raise ChainError(f"{PROTOCOL}: no contract at {morpho} (Morpho) at block {block.number}")
    if not ids:
        return MarketsRead((), ())
    lab = f"{PROTOCOL} Morpho {morpho}"
    first = mc.run([c for i in ids for c in (Call(morpho, MORPHO.fn("idToMarketParams"), (bytes.fromhex(i[2:]),), label=lab),
                                             Call(morpho, MORPHO.fn("market"), (bytes.fromhex(i[2:]),), label=lab))])
    params = [first[2 * k] for k in range(len(ids))]
    states = [MarketState(*first[2 * k + 1]) for k in range(len(ids))]
    for mid, p in zip(ids, params):
        if p[0] == ZERO_ADDRESS:
            raise ChainError(f"{PROTOCOL}: market {mid} from CreateMarket has no params in idToMarketParams "
                             f"at {morpho} (not a Morpho Blue contract?)")
    calls: list[Call | None] = []
    tokens = sorted({t for p in params for t in (p[0], p[1]) if t != ZERO_ADDRESS})
    for p, s, mid in zip(params, states, ids):
        ml = f"{PROTOCOL} market {mid}"
        calls.append(Call(p[2], ORACLE.fn("price"), required=False, label=ml + " oracle")
                     if p[2] != ZERO_ADDRESS else None)
        calls.append(Call(p[3], IRM.fn("borrowRateView"), (tuple(p), s.as_tuple()), required=False, gas=200_000,
                          label=ml + " irm") if p[3] != ZERO_ADDRESS else None)
    real = [c for c in calls if c is not None]
    token_calls = [Call(t, ERC20.fn(f), required=False, label=f"{PROTOCOL} token {t}")
                   for t in tokens for f in ("decimals", "symbol")]
    raw = mc.run_raw([RawCall(c.target, c.fn.encode(*c.args), True, c.gas) for c in real + token_calls])
    outcomes = [_outcome(c, ok, data) for c, (ok, data) in zip(real + token_calls, raw)]
    it = iter(outcomes[:len(real)])
    per_market = [next(it) if c is not None else (None, None) for c in calls]
    tok = {t: (outcomes[len(real) + 2 * j], outcomes[len(real) + 2 * j + 1][0]) for j, t in enumerate(tokens)}
    known = {k.lower(): v for k, v in (known_symbols or {}).items()}

    def symbol(addr: str) -> str:
        sym = tok[addr][1]
        return known.get(addr.lower()) or (sym if isinstance(sym, str) and sym.isprintable() and sym else addr[:10])

    markets, skipped = [], []
    for k, (mid, p, s) in enumerate(zip(ids, params, states)):
        (price, price_err), (rate, rate_err) = per_market[2 * k], per_market[2 * k + 1]
        if p[2] == ZERO_ADDRESS:
            continue  # markets without an oracle cannot hold debt (Morpho checks the oracle on borrow)
        name = f"{symbol(p[1])}/{symbol(p[0])}-{lltv_text(p[4])}"
        problems = []
        for role, addr in (("loan", p[0]), ("collateral", p[1])):
            (dec, dec_err) = tok[addr][0]
            if dec_err is not None or not isinstance(dec, int) or dec > 77:
                problems.append(f"{role} token {addr}: " + (dec_err or f"decimals() = {dec!r}"))
        if price_err is not None:
            problems.append(f"oracle: {price_err}")
        elif price == 0:
            problems.append(f"oracle: price() on {p[2]} is 0")
        if rate_err is not None:
            problems.append(f"irm: {rate_err}")
        if problems:
            skipped.append(SkippedMarket(PROTOCOL, mid, name, "; ".join(problems)))
            continue
        accrued = accrue(s, rate, mc.block.timestamp) if rate is not None else s
        markets.append(MorphoMarket(
            mid, p[0], p[1], p[2], p[3], p[4], accrued, price, tok[p[0]][0][0], tok[p[1]][0][0],
            symbol(p[0]), symbol(p[1])))
    return MarketsRead(tuple(markets), tuple(skipped))


def read_positions(mc: Multicaller, morpho: str, markets: Sequence[MorphoMarket],
                   pairs: Sequence[tuple[str, str]]) -> list[MorphoPosition]:
    """Positions with debt, for (market id, account) pairs in the given markets."""
    by_id = {m.id: m for m in markets}
    todo = [(mid, a) for mid, a in pairs if mid in by_id]
    lab = f"{PROTOCOL} Morpho {morpho} position"
    res = mc.run([Call(morpho, MORPHO.fn("position"), (bytes.fromhex(mid[2:]), a), label=lab) for mid, a in todo])
    out = []
    for (mid, a), (_supply, bshares, coll) in zip(todo, res):
        if bshares == 0:
            continue
        m = by_id[mid]
        borrowed = to_assets_up(bshares, m.state.total_borrow_assets, m.state.total_borrow_shares)
        out.append(MorphoPosition(mid, a, bshares, borrowed, coll))
    return out


def market_name(m: MorphoMarket, taken: set[str]) -> str:
    """'COLL/LOAN-LLTV' (LLTV digits after '0.', e.g. 86 for 0.86); id prefix added when not unique."""
    name = f"{m.collateral_symbol}/{m.loan_symbol}-{lltv_text(m.lltv)}"
    if name in taken:
        name = f"{name}-{m.id[2:10]}"
    return name


def market_params(m: MorphoMarket) -> dict[str, Any]:
    """`params` of a morpho-blue markets.json entry (docs/snapshot-format.md)."""
    # Collateral price in whole loan tokens per whole collateral token, from the market's own oracle.
    oracle_price = m.oracle_price / ORACLE_PRICE_SCALE * 10 ** (m.collateral_decimals - m.loan_decimals)
    return {"lltv": m.lltv / WAD, "collateral": m.collateral_symbol, "loan": m.loan_symbol, "id": m.id,
            "oracle": m.oracle, "irm": m.irm, "oracle_price": oracle_price,
            "oracle_price_raw": str(m.oracle_price), "liquidation_incentive": lif(m.lltv),
            "total_borrow_assets": m.state.total_borrow_assets / 10 ** m.loan_decimals,
            "total_supply_assets": m.state.total_supply_assets / 10 ** m.loan_decimals}


# -- oracle sources --------------------------------------------------------------------------------

V2_TYPE = "morpho-chainlink-oracle-v2"
FEED_ORACLE_TYPE = "devnet-feed-oracle"
_V2_FEEDS = (("BASE_FEED_1", 1), ("BASE_FEED_2", 1), ("QUOTE_FEED_1", -1), ("QUOTE_FEED_2", -1))
_V2_KEYS = ("BASE_VAULT", "BASE_VAULT_CONVERSION_SAMPLE", "QUOTE_VAULT", "QUOTE_VAULT_CONVERSION_SAMPLE",
            "BASE_FEED_1", "BASE_FEED_2", "QUOTE_FEED_1", "QUOTE_FEED_2", "SCALE_FACTOR")
_ORACLE_GETTERS = tuple((ORACLE_V2, k) for k in _V2_KEYS) + ((FEED_ORACLE, "collateralFeed"), (FEED_ORACLE, "loanFeed"))
# A composed rate this close to 1 is "the asset's own price" (price() truncates to an integer).
_UNIT_TOL = 1e-9


@dataclass(frozen=True)
class FeedTerm:
    """One feed an oracle multiplies (exponent +1) or divides by (-1)."""

    role: str  # e.g. BASE_FEED_1
    address: str
    exponent: int
    known: KnownFeed | None
    state: FeedState | None


def oracle_terms(p: Mapping[str, Any]) -> tuple[str, list[tuple[str, str, int]]] | None:
    """(type, [(role, feed address, exponent)]) of a probed oracle, or None when it is neither a
    MorphoChainlinkOracleV2 nor the devnet's feed oracle. Vaults need no term: their conversion is a
    constant at the block and lands in the composed rate."""
    if all(p.get(k) is not None for k in _V2_KEYS):
        return V2_TYPE, [(role, p[role], e) for role, e in _V2_FEEDS if p[role] != ZERO_ADDRESS]
    if p.get("collateralFeed") is not None and p.get("loanFeed") is not None:
        return FEED_ORACLE_TYPE, [("collateralFeed", p["collateralFeed"], 1), ("loanFeed", p["loanFeed"], -1)]
    return None


def compose(collateral: str, loan: str, price_whole: float, terms: Sequence[FeedTerm], typ: str, source: str,
            feeds: FeedBook) -> tuple[OracleSpec, OracleSpec]:
    """(collateral spec, loan spec) for an oracle price = K x product of its feeds' prices^exponent.

    Each market feed of asset X in quote Y contributes p_X / p_Y; rate and fixed feeds and vault
    conversions are constants, and K (the composed rate) is the oracle price divided by the market
    feeds' product, so the formula reproduces price() at the block. What is left must be one asset X
    over one asset Z (either may be absent), which the kinds express exactly:
    coll/loan = K p_X / p_Z -> collateral = ratio of X at rate K (market when X is the collateral and
    K = 1; fixed K without X), loan = market of Z (ratio of Z at 1 when Z is not the loan; fixed $1
    without Z while X is present: the oracle takes the loan at $1). Anything else is unclassified.
    """
    def bad(why: str) -> tuple[OracleSpec, OracleSpec]:
        return osrc.unclassified(source, why), osrc.unclassified(source, why)

    exps: dict[str, int] = {}
    factor = 1.0
    for t in terms:
        if t.known is None:
            return bad(f"{typ}: {t.role} {t.address} is no asset's feed in this snapshot and the address book "
                       f"does not name it")
        if t.state is None:
            return bad(f"{typ}: {t.role} {t.address} does not answer decimals()/latestRoundData() with a price > 0")
        if t.known.kind == "market":
            exps[t.known.asset] = exps.get(t.known.asset, 0) + t.exponent
            if t.known.quote is not None:
                exps[t.known.quote] = exps.get(t.known.quote, 0) - t.exponent
            factor *= t.state.value ** t.exponent
    left = {a: e for a, e in exps.items() if e}
    up, down = [a for a, e in left.items() if e == 1], [a for a, e in left.items() if e == -1]
    if len(up) + len(down) != len(left) or len(up) > 1 or len(down) > 1:
        text = " x ".join(f"{a}^{e}" for a, e in sorted(left.items()))
        return bad(f"{typ}: price moves as {text}, not as one asset's price over another's")
    x, z = (up[0] if up else None), (down[0] if down else None)
    k = price_whole / factor

    def term_for(asset: str | None, avoid: str | None = None) -> FeedTerm | None:
        for t in terms:
            if t.known is not None and t.known.kind == "market" and asset in (t.known.asset, t.known.quote) \
                    and (avoid is None or avoid not in (t.known.asset, t.known.quote)):
                return t
        return None

    def extras(t: FeedTerm | None) -> dict[str, Any]:
        if t is None:
            return {}
        return {"age_s": t.state.age_s, **feeds.meta(t.address)}

    if x is None:
        coll = (OracleSpec("ratio", typ, source, of=loan, rate=k) if z is None
                else OracleSpec("fixed", typ, source, price=k))
    elif x == collateral:
        if abs(k - 1.0) > _UNIT_TOL:
            return bad(f"{typ}: the collateral is priced at {k:.9g} x its own market price, which no oracle kind "
                       f"expresses")
        coll = OracleSpec("market", typ, source, **extras(term_for(x)))
    else:
        coll = OracleSpec("ratio", typ, source, of=x, rate=k, **extras(term_for(x)))
    if z is None:
        loan_spec = (OracleSpec("market", typ, source) if x is None
                     else OracleSpec("fixed", typ, source, price=1.0))
    else:
        zt = term_for(z, avoid=x)
        loan_spec = (OracleSpec("market", typ, source, **extras(zt)) if z == loan
                     else OracleSpec("ratio", typ, source, of=z, rate=1.0, **extras(zt)))
    return coll, loan_spec


def read_oracle_sources(mc: Multicaller, markets: Sequence[MorphoMarket], feeds: FeedBook) -> dict[str, tuple[OracleSpec, OracleSpec]]:
    """{market id: (collateral spec, loan spec)}: each market's oracle as a formula of market prices,
    read at the pinned block (two multicall batches). The markets' symbols must be the snapshot's."""
    ts = int(mc.block.timestamp)
    probes = osrc.probe(mc, [m.oracle for m in markets], _ORACLE_GETTERS, label=f"{PROTOCOL} oracle")
    shapes = {a: oracle_terms(p) for a, p in probes.items()}
    states = osrc.read_feed_states(mc, [addr for sh in shapes.values() if sh for _r, addr, _e in sh[1]], ts)
    out: dict[str, tuple[OracleSpec, OracleSpec]] = {}
    for m in markets:
        shape = shapes.get(m.oracle)
        if shape is None:
            why = ("neither a MorphoChainlinkOracleV2 (BASE_VAULT, BASE_FEED_1..QUOTE_FEED_2, SCALE_FACTOR) nor the "
                   "devnet's MorphoFeedOracle (collateralFeed, loanFeed)")
            out[m.id] = (osrc.unclassified(m.oracle, why), osrc.unclassified(m.oracle, why))
            continue
        typ, raw_terms = shape
        terms = [FeedTerm(role, addr, e, feeds.get(addr), states.get(addr)) for role, addr, e in raw_terms]
        price_whole = market_params(m)["oracle_price"]
        out[m.id] = compose(m.collateral_symbol, m.loan_symbol, price_whole, terms, typ, m.oracle, feeds)
    return out

"""Liquidator economics: a liquidation happens only when it pays the liquidator (docs/model.md,
"Liquidator economics").

Profit of one liquidation call, judged against the venues as they are at the START of the round (every
call of a round alone, never with another call's sale):

    profit = proceeds of selling the call's `sold` collateral along its route
             - debt repaid x its market price - gas_usd(protocol)

and the call is executed iff profit > min_profit_usd. Proceeds are exact per venue kind (the pool's
output for constant-product and Uniswap V3 pools, fee included; the integral of the price law for
linear, exponential and sqrt venues); an asset without a venue sells at its market price.

Gated: the calls that need the sale to pay (Aave V3 `liquidationCall`, Morpho Blue `liquidate`) and,
for Compound V3, the `buyCollateral` purchases that follow `absorb` (a purchase that does not pay
leaves the absorbed collateral with the protocol: it is not sold). Not gated: calls that need no sale
(Comet `absorb`, Maker `bark`, Liquity's `liquidateTroves`), and Maker's `take`, which the rule
settles at the market price (it stands for the Dutch auction having fallen to where a keeper takes).

With a finite `capital_usd` (per round, only without flash loans: a flash-loan liquidator repays with
borrowed funds returned from the sale) the calls that pay are executed per market in the round's
(protocol, market) order, within a market largest profit first (ties: book row order), each only if
its capital need (the debt repaid at market prices) fits in what the round has left.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import pandas as pd

from defirisk.errors import InputError
from defirisk.markets.impact import AssetCurve, ConstantProduct, Exponential, Linear, SquareRoot, UniswapV3
from defirisk.rules.base import BookState, Events, Step
from defirisk.solver.result import UNLIQUIDATED_COLUMNS, empty_unliquidated

LIQUIDATORS = ("profitable", "all")

# Gas of one liquidation call, MEASURED on the devnet (median gasUsed of the receipts of the forked-chain
# validator's real calls; small.yaml, WETH -25%: Aave 21 calls, 352,426-445,392; Morpho 5 calls,
# 108,137-112,188), with:
#   .venv/bin/python benchmarks/liquidation_gas.py --scenario fixtures/scenarios/small.yaml --shock WETH=0.25
# The liquidator's swap of the seized collateral is not included (docs/model.md).
GAS_PER_CALL: Mapping[str, int] = MappingProxyType({"aave-v3": 391_626, "morpho-blue": 112_176})
# Protocols without devnet contracts yet have no measured figure and are charged no gas by default:
# compound-v3's gated call is buyCollateral; maker and liquity have no gated call (module docstring).
UNMEASURED_GAS = 0

# Default gas price: 20 gwei, a stressed-market figure. Mainnet's median gas price was 15-20 gwei through
# 2023 and peaked at 83 gwei on 2024-03-05; after Dencun (2024-03-13) it fell to 2-3 gwei (mid-2024),
# per the Dune Analytics gas dashboard by @hildobby as reported in June and August 2024. Cascades happen
# in volatile markets, when gas rises and keepers bid priority fees, so the calm median understates it.
GAS_PRICE_GWEI = 20.0
# ETH price for gas when the snapshot has neither WETH nor ETH: a round figure near ETH's 2024-25 range;
# give `eth_usd` or `gas_usd` for anything precise.
ETH_USD_FALLBACK = 3000.0
ETH_SYMBOLS = ("WETH", "ETH")

# Calls that need no sale to pay the caller: never gated (docs/model.md).
NO_SALE_CALLS: Mapping[str, str] = MappingProxyType({
    "compound-v3": "absorb", "maker": "bark (and take, settled at the market price)",
    "liquity": "liquidateTroves (stability-pool offset, redistribution)"})

_CAPITAL_KEY = "liquidators.capital_used"  # in the round's `shared` dict: USD of capital committed so far


@dataclass(frozen=True)
class LiquidatorPolicy:
    """Who liquidates. `liquidators="all"` is the model without economics (every liquidatable position
    is liquidated); "profitable" executes a call only when it pays (module docstring).

    gas_usd: USD per gated call for every protocol; None = gas_price_gwei x GAS_PER_CALL[protocol] x the
    ETH price (`eth_usd`, default the snapshot's WETH, else ETH, else ETH_USD_FALLBACK).
    capital_usd: USD the liquidators can commit per round (inf = unlimited); binds only without flash loans.
    """

    liquidators: str = "profitable"
    gas_usd: float | None = None
    gas_price_gwei: float = GAS_PRICE_GWEI
    min_profit_usd: float = 0.0
    capital_usd: float = math.inf
    flash_loans: bool = True
    eth_usd: float | None = None

    def __post_init__(self) -> None:
        if self.liquidators not in LIQUIDATORS:
            raise InputError(f"liquidators must be one of {', '.join(LIQUIDATORS)}, got {self.liquidators!r}")
        for name in ("gas_usd", "eth_usd"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"liquidator policy: {name} must be a finite number >= 0, got {v!r}")
        for name in ("gas_price_gwei", "min_profit_usd"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"liquidator policy: {name} must be a finite number >= 0, got {v!r}")
        c = self.capital_usd
        if not (isinstance(c, (int, float)) and not math.isnan(c) and c >= 0):
            raise InputError(f"liquidator policy: capital_usd must be >= 0 (inf = unlimited), got {c!r}")
        if not isinstance(self.flash_loans, bool):
            raise InputError("liquidator policy: flash_loans must be True or False")
        if math.isfinite(c) and self.flash_loans:
            raise InputError("liquidator policy: capital_usd limits only liquidations funded from capital; with "
                             "flash loans every call is funded by a flash loan repaid from its own sale. "
                             "Set flash_loans=False (--no-flash-loans) to make capital bind.")

    @property
    def gates(self) -> bool:
        return self.liquidators == "profitable"

    def eth_price(self, prep) -> float:
        if self.eth_usd is not None:
            return float(self.eth_usd)
        for sym in ETH_SYMBOLS:
            if sym in prep.symbols:
                return float(prep.p0[prep.symbols.index(sym)])
        return ETH_USD_FALLBACK

    def gas_cost_usd(self, protocol: str, prep) -> float:
        """USD gas of one gated call of `protocol`."""
        if self.gas_usd is not None:
            return float(self.gas_usd)
        return self.gas_price_gwei * 1e-9 * GAS_PER_CALL.get(protocol, UNMEASURED_GAS) * self.eth_price(prep)

    def describe(self, prep) -> dict[str, Any]:
        """What the result's assumptions record about the liquidators."""
        if not self.gates:
            return {"liquidators": "all"}
        protocols = sorted({b.protocol for b in prep.books})
        return {"liquidators": "profitable", "min_profit_usd": self.min_profit_usd,
                "gas_usd_per_call": {p: self.gas_cost_usd(p, prep) for p in protocols},
                "gas_source": "given" if self.gas_usd is not None else
                f"{self.gas_price_gwei:g} gwei x measured gas per call x ETH ${self.eth_price(prep):,.2f}",
                "capital_usd_per_round": None if math.isinf(self.capital_usd) else self.capital_usd,
                "flash_loans": self.flash_loans,
                "judged_against": "venue state at the start of the round, each call alone",
                "not_gated": dict(NO_SALE_CALLS)}


ALL = LiquidatorPolicy(liquidators="all")
PROFITABLE = LiquidatorPolicy()


def resolve_policy(liquidators: Any) -> LiquidatorPolicy | None:
    """'profitable' | 'all' | LiquidatorPolicy | None -> the policy to gate with, or None for 'all'
    (every liquidatable position is liquidated: today's model, bit for bit)."""
    if liquidators is None:
        return None
    if isinstance(liquidators, str):
        if liquidators not in LIQUIDATORS:
            raise InputError(f"liquidators must be one of {', '.join(LIQUIDATORS)} or a LiquidatorPolicy, got {liquidators!r}")
        liquidators = PROFITABLE if liquidators == "profitable" else ALL
    if not isinstance(liquidators, LiquidatorPolicy):
        raise InputError(f"liquidators must be 'profitable', 'all' or a LiquidatorPolicy, got {type(liquidators).__name__}")
    return liquidators if liquidators.gates else None


def make_policy(liquidators: str = "profitable", *, gas_usd: float | None = None, min_profit_usd: float | None = None,
                capital_usd: float | None = None, flash_loans: bool | None = None) -> LiquidatorPolicy:
    """The policy of command-line options (None = the default). Economics options need 'profitable'."""
    given = {k: v for k, v in (("gas_usd", gas_usd), ("min_profit_usd", min_profit_usd),
                               ("capital_usd", capital_usd), ("flash_loans", flash_loans)) if v is not None}
    if liquidators == "all" and given:
        names = ", ".join(f"{k} (--{k.replace('_', '-')})" for k in sorted(given))
        raise InputError(f"{names}: only with liquidators 'profitable' ('all' liquidates every liquidatable "
                         "position whatever it costs)")
    return LiquidatorPolicy(liquidators=liquidators, **given)


# ---------------------------------------------------------------------------------------------------
# Proceeds of a sale: exact integrals of each venue kind's price along the sale.

def _venue_proceeds(v, st: tuple, q: np.ndarray) -> np.ndarray:
    """Proceeds of selling q tokens (gross) into venue v from state st, in units of p0 (USD = p0 x this).
    A venue's USD price is p0 x rel(state), so proceeds = p0 x (what the pool pays, in units of its
    initial mid)."""
    q = np.asarray(q, dtype=float)
    if isinstance(v, ConstantProduct):
        B, Q = (np.asarray(a, dtype=float) for a in st)
        # out = Q g q / (B + g q) quote tokens (the input, fee included, stays in the pool)
        return Q * v.gamma * q / (B + v.gamma * q) / v.m0
    if isinstance(v, UniswapV3):
        # price = p0 (w/w0)^2; on a segment of liquidity L, d(net) = L d(1/w) = -L dw / w^2, so
        # int price d(net) = p0 L (w_start - w_end) / w0^2: quote out = L dw, exactly, across ticks.
        # The fee (1 - gamma of the input) goes to the LPs: only the net input moves along the curve.
        n0 = np.asarray(st[0], dtype=float)
        return (_v3_quote(v, n0 + v.gamma * q) - _v3_quote(v, n0)) / (v.w0 * v.w0)
    if isinstance(v, Linear):        # r = max(1 - k q, 0)
        a0, a1 = _capped(st[0], q, 1.0 / v.k)
        return (a1 - a0) * (1.0 - 0.5 * v.k * (a1 + a0))
    if isinstance(v, Exponential):   # r = f + (1 - f) exp(-q/d)
        q0 = np.asarray(st[0], dtype=float)
        return v.floor * q - (1.0 - v.floor) * v.depth * np.exp(-q0 / v.depth) * np.expm1(-q / v.depth)
    if isinstance(v, SquareRoot):    # r = max(1 - c sqrt(q), 0)
        a0, a1 = _capped(st[0], q, 1.0 / (v.c * v.c))
        return (a1 - a0) - (2.0 / 3.0) * v.c * (a1 ** 1.5 - a0 ** 1.5)
    integral = getattr(v, "rel_integral", None)   # a kind with its own exact integral (depth_curve)
    if integral is not None:
        return integral(st, q)
    return _quadrature(v, st, q)


def _capped(q0, q, qmax) -> tuple[np.ndarray, np.ndarray]:
    q0 = np.asarray(q0, dtype=float)
    return np.minimum(q0, qmax), np.minimum(q0 + q, qmax)


def _v3_quote(v: UniswapV3, net: np.ndarray) -> np.ndarray:
    """Quote paid out (in w units x whole-token liquidity) from the initial state to cumulative net input."""
    cache = getattr(v, "_econ_gc", None)
    if cache is None:
        ws, Ls = v.ws, v.Ls
        cache = np.concatenate([[0.0], np.cumsum(Ls * (ws[:-1] - ws[1:]))])
        v._econ_gc = cache  # cumulative quote at each segment's top (a derived constant of the curve)
    net = np.minimum(np.asarray(net, dtype=float), v.A[-1])
    k = np.clip(np.searchsorted(v.A, net, side="left") - 1, 0, len(v.Ls) - 1)
    return cache[k] + v.Ls[k] * (v.ws[k] - v._w_of(net))


_GL_X, _GL_W = np.polynomial.legendre.leggauss(32)


def _quadrature(v, st: tuple, q: np.ndarray) -> np.ndarray:
    """A venue kind without a closed form: 32-point Gauss-Legendre of its relative mid price over the
    gross amount sold (exact for polynomials of degree <= 63; it knows no fee, so a fee-charging kind
    needs its own closed form, as constant_product and uniswap_v3 have)."""
    out = np.zeros(np.shape(q))
    for x, w in zip(_GL_X, _GL_W):
        t = 0.5 * q * (x + 1.0)
        out = out + 0.5 * w * q * v.rel(v.sell(st, t))
    return out


def curve_proceeds(curve: AssetCurve, state: tuple, amounts) -> np.ndarray:
    """USD proceeds of selling each of `amounts` (tokens, each on its own) from `state` along the
    asset's routed curve: the routing split of AssetCurve.sell, each venue's exact proceeds."""
    x = np.asarray(amounts, dtype=float)
    if len(curve.venues) == 1:
        parts = [x]
    else:
        _, parts = curve.sell(state, x)
    total = np.zeros(np.shape(x))
    for v, st, part in zip(curve.venues, state, parts):
        total = total + _venue_proceeds(v, st, part)
    return curve.p0 * total


def sale_proceeds(prep, j: int, venue_states: Mapping[int, tuple], market: np.ndarray, amounts) -> np.ndarray:
    """USD proceeds of selling `amounts` of asset j, each alone, from the venues' current states (an
    asset without a venue sells at its market price)."""
    x = np.asarray(amounts, dtype=float)
    rt = getattr(prep, "router", None)
    if rt is not None and j in rt.volatile:  # along every route, the quote tokens sold on (routing.py)
        flat = [rt.proceeds_usd(venue_states, market, j, float(a)) for a in x.ravel()]
        return np.asarray(flat, dtype=float).reshape(x.shape)
    if j in prep.curves:
        return curve_proceeds(prep.curves[j], venue_states[j], x)
    return x * float(market[j])


# ---------------------------------------------------------------------------------------------------
# Profit of each call and the gate

def call_profits(prep, protocol: str, ev: Events, market: np.ndarray, venue_states, policy: LiquidatorPolicy):
    """Per account of `ev` (one liquidation call each): (accounts, profit USD, capital need USD).
    profit = proceeds of the call's sold collateral (each asset sold alone from the start-of-round
    venue state) - debt repaid at market prices - gas; need = debt repaid at market prices."""
    accounts, inv = np.unique(ev.account, return_inverse=True)
    n = len(accounts)
    proceeds = np.zeros(n)
    for j in np.unique(ev.coll_asset):
        m = ev.coll_asset == j
        amt = np.bincount(inv[m], weights=ev.sold[m], minlength=n)
        has = np.flatnonzero(np.bincount(inv[m], minlength=n) > 0)
        proceeds[has] += sale_proceeds(prep, int(j), venue_states, market, amt[has])
    cost = np.bincount(inv, weights=ev.repaid * market[ev.debt_asset], minlength=n)
    return accounts, proceeds - cost - policy.gas_cost_usd(protocol, prep), cost


def _select(profit: np.ndarray, need: np.ndarray, policy: LiquidatorPolicy, shared: dict) -> np.ndarray:
    """Calls that pay (profit > min_profit_usd); with limited capital (no flash loans), largest profit
    first (stable: ties keep book order), each only if its need fits in the round's capital left."""
    ok = profit > policy.min_profit_usd
    if policy.flash_loans or math.isinf(policy.capital_usd):
        return ok
    used = shared.get(_CAPITAL_KEY, 0.0)
    keep = np.zeros(len(profit), dtype=bool)
    for i in np.argsort(-profit, kind="stable"):
        if not ok[i]:
            continue
        if used + need[i] <= policy.capital_usd:
            used += need[i]
            keep[i] = True
    shared[_CAPITAL_KEY] = used
    return keep


def _merge(state: BookState, new: BookState, rows: np.ndarray) -> BookState:
    """`state` with the given rows taken from `new` (an independent rule's step on the same book)."""
    n = len(state.coll)
    coll, debt = state.coll.copy(), state.debt.copy()
    coll[rows], debt[rows] = new.coll[rows], new.debt[rows]
    extra = dict(state.extra)
    for k, v in new.extra.items():
        old = state.extra.get(k)
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n and isinstance(old, np.ndarray):
            merged = old.copy()
            merged[rows] = v[rows]
            extra[k] = merged
    return state.evolve(coll=coll, debt=debt, extra=extra)


def gate(prep, bi: int, state: BookState, step: Step, oracle: np.ndarray, market: np.ndarray, shared: dict,
         venue_states: Mapping[int, tuple], policy: LiquidatorPolicy) -> Step:
    """The liquidator's decision on one round's calls of book `bi` (`step` = every liquidatable account's
    call, as the rule made them from `state`)."""
    book = prep.books[bi]
    rule, ev = book.rule, step.events
    if book.protocol == "compound-v3":
        return _gate_buy_collateral(prep, book, step, oracle, market, shared, venue_states, policy)
    if book.protocol in NO_SALE_CALLS or not rule.independent:
        return step
    accounts, profit, need = call_profits(prep, book.protocol, ev, market, venue_states, policy)
    keep = _select(profit, need, policy, shared)
    if keep.all():
        return step
    if not keep.any():
        return Step(state, Events.empty())
    # An independent rule's call on an account depends on that account's row only, so the calls that
    # pay are exactly the rule's calls on those rows: keep their events and their rows' new state.
    rows = accounts[keep]
    evm = np.isin(ev.account, rows)
    events = Events(*(getattr(ev, f)[evm] for f in Events.__dataclass_fields__))
    return Step(_merge(state, step.state, rows), events)


def _gate_buy_collateral(prep, book, step: Step, oracle, market, shared, venue_states, policy) -> Step:
    """Compound V3: `absorb` always happens (it needs no sale); each (account, asset) the protocol absorbed
    is offered by `buyCollateral` at oracle x (1 - storeFront x (1 - liquidationFactor)), paid in base.
    A buyer takes it when selling it pays; otherwise the collateral stays with the protocol (sold = 0)."""
    rule, ev = book.rule, step.events
    if not len(ev):
        return step
    disc = 1.0 - rule.store_front * (1.0 - rule.lf[ev.coll_asset])
    cost = ev.seized * oracle[ev.coll_asset] * disc / oracle[rule.base] * market[rule.base]
    proceeds = np.zeros(len(ev))
    for j in np.unique(ev.coll_asset):
        m = ev.coll_asset == j
        proceeds[m] = sale_proceeds(prep, int(j), venue_states, market, ev.sold[m])
    profit = proceeds - cost - policy.gas_cost_usd(book.protocol, prep)
    keep = _select(profit, cost, policy, shared)
    if keep.all():
        return step
    return Step(step.state, replace(ev, sold=np.where(keep, ev.sold, 0.0)))


# ---------------------------------------------------------------------------------------------------
# What stays liquidatable at the end

def unliquidated(prep, book_states, oracle, market: np.ndarray) -> pd.DataFrame:
    """Positions liquidatable at the end (by their protocol's rule at the `oracle` prices: one vector, or
    one per book) that no call liquidated, with debt and collateral USD at the end `market` prices;
    underwater = debt > collateral."""
    parts = []
    per_book = isinstance(oracle, (list, tuple))
    for bi, (b, st) in enumerate(zip(prep.books, book_states)):
        if not len(st.coll):
            continue
        rows = np.flatnonzero(b.rule.liquidatable(st, oracle[bi] if per_book else oracle))
        if not len(rows):
            continue
        debt = (st.debt[rows] * market).sum(axis=1)
        coll = (st.coll[rows] * market).sum(axis=1)
        parts.append(pd.DataFrame({"protocol": b.protocol, "market": b.market, "account": b.accounts[rows],
                                   "collateral_usd": coll, "debt_usd": debt, "underwater": debt > coll},
                                  columns=list(UNLIQUIDATED_COLUMNS)))
    return pd.concat(parts, ignore_index=True) if parts else empty_unliquidated()


def finish(result, prep, book_states, oracle, market: np.ndarray, policy: LiquidatorPolicy | None):
    """`result` with the liquidatable-not-liquidated positions and the policy in its assumptions."""
    table = unliquidated(prep, book_states, oracle, market)
    return replace(result, not_liquidated=table,
                   assumptions={**result.assumptions, "liquidators": (policy or ALL).describe(prep)})

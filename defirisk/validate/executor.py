"""Execute a cascade on the fork, round by round, with the protocols' and the pools' own code.

Order (the sequential semantics of docs/model.md, played on chain):
0. The shock: an impersonated seller sells into each shocked asset's pools the amount the model's
   venue curves say brings the market price to p0 (1 - s), routed over the venues as the model routes
   it (alphabetical order of shocked assets). A shocked asset without pools moves its oracle only.
   Then every moved oracle is set to the market price.
r = 1, 2, ...: every position liquidatable on chain at the current oracle prices is liquidated once;
   the liquidator's seized collateral is sold, one routed sale per asset in alphabetical order (the
   routing split comes from the model's venue curves applied to the executed amount); the oracles
   are set to the new market prices. Stop when a round finds nothing (max_rounds guards the loop).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Mapping

import pandas as pd

from defirisk.addressbook import AddressBook
from defirisk.errors import ConvergenceError, InputError
from defirisk.markets.impact import build_curves
from defirisk.model import Snapshot
from defirisk.solver.result import LIQUIDATION_COLUMNS, SALE_COLUMNS, Totals
from defirisk.validate.contracts import LIQUIDATOR_ADDRESS, SHOCK_SELLER_ADDRESS
from defirisk.validate.fork import ForkChain
from defirisk.validate.funding import Funder
from defirisk.validate.liquidators import AaveLiquidator, Liquidation, MorphoLiquidator
from defirisk.validate.oracles import OraclePusher
from defirisk.validate.venues import Market, resolve_venues, split_raw

DEFAULT_MAX_ROUNDS = 50


@dataclass(frozen=True, eq=False)
class Execution:
    """What happened on the fork. Same table shapes as the solver's CascadeResult."""

    shocked_prices: Mapping[str, float]
    end_prices: Mapping[str, float]
    rounds: int
    liquidations: pd.DataFrame
    sales: pd.DataFrame
    transactions: int
    seconds: float
    by_protocol: Mapping[str, Totals] = field(default_factory=dict)
    totals: Totals = Totals()

    def to_dict(self) -> dict:
        from defirisk.solver.result import frame_records

        return {"shocked_prices": dict(self.shocked_prices), "end_prices": dict(self.end_prices),
                "rounds": self.rounds, "transactions": self.transactions, "seconds": round(self.seconds, 3),
                "totals": self.totals.to_dict(), "by_protocol": {p: t.to_dict() for p, t in self.by_protocol.items()},
                "liquidations": frame_records(self.liquidations), "sales": frame_records(self.sales)}


def _liquidators(chain: ForkChain, snapshot: Snapshot, book: AddressBook, funder: Funder, usd) -> list:
    out = []
    for m in snapshot.markets:
        if m.protocol == "aave-v3":
            out.append(AaveLiquidator(chain, snapshot, funder, LIQUIDATOR_ADDRESS, m.market))
        elif m.protocol == "morpho-blue":
            if book.morpho_blue is None:
                raise InputError(f"address book {book.name} has no morpho_blue entry")
            out.append(MorphoLiquidator(chain, snapshot, funder, LIQUIDATOR_ADDRESS, book.morpho_blue.morpho,
                                        m.market, usd))
        else:
            raise InputError(f"validation of {m.protocol} markets is not implemented (aave-v3, morpho-blue are)")
    return out


def _record(rnd: int, liq: Liquidation, snapshot: Snapshot) -> dict:
    cd, dd = snapshot.assets[liq.collateral_asset].decimals, snapshot.assets[liq.debt_asset].decimals
    seized, repaid = liq.collateral_seized / 10**cd, liq.debt_repaid / 10**dd
    return {"round": rnd, "protocol": liq.protocol, "market": liq.market, "account": liq.account,
            "collateral_asset": liq.collateral_asset, "collateral_seized": seized,
            "collateral_seized_usd": seized * liq.collateral_usd_price,
            "collateral_sold": liq.collateral_received / 10**cd, "debt_asset": liq.debt_asset,
            "debt_repaid": repaid, "debt_repaid_usd": repaid * liq.debt_usd_price, "bad_debt_usd": liq.bad_debt_usd}


def execute(chain: ForkChain, snapshot: Snapshot, book: AddressBook, shocks: Mapping[str, float], *,
            oracle_mode: str, funding_mode: str, max_rounds: int = DEFAULT_MAX_ROUNDS) -> Execution:
    """Play the shock and the cascade on the fork `chain` (whose state is the snapshot's block)."""
    t0 = time.perf_counter()
    tx0 = chain.transactions
    for sym, s in shocks.items():
        if sym not in snapshot.assets:
            raise InputError(f"shock on unknown asset {sym!r} (assets: {', '.join(snapshot.symbols)})")
        if not (isinstance(s, (int, float)) and math.isfinite(s) and 0 <= s < 1):
            raise InputError(f"shock {sym}={s}: must be a fraction in [0, 1)")
    p0 = snapshot.prices()
    venues = resolve_venues(snapshot, book, chain)
    market = Market(chain, venues, p0)
    curves = build_curves(snapshot)
    states = {s: c.init_state() for s, c in curves.items()}
    funder = Funder(chain, funding_mode)
    fixed: dict[str, Fraction] = {}
    moved = sorted(set(venues) | {s for s, v in shocks.items() if v > 0})
    pusher = OraclePusher(chain, snapshot, book, oracle_mode, moved)

    def usd(sym: str) -> float:
        v = pusher.usd(sym)
        return p0[sym] if v is None else v

    liquidators = _liquidators(chain, snapshot, book, funder, usd)
    held: dict[str, int] = {}
    for liq in liquidators:
        liq.held = held
    sales: list[dict] = []

    def prices() -> dict[str, float]:
        out = dict(p0)
        for s in venues:
            out[s] = market.price(s)
        for s, r in fixed.items():
            out[s] = p0[s] * float(r)
        return out

    def sell(sym: str, raw_total: int, seller: str, rnd: int, kind: str) -> None:
        dec = snapshot.assets[sym].decimals
        whole = raw_total / 10**dec
        if sym not in curves:
            sales.append({"round": rnd, "kind": kind, "asset": sym, "venue": -1, "amount": whole,
                          "price_before": p0[sym], "price_after": p0[sym]})
            return
        before = market.price(sym)
        states[sym], parts = curves[sym].sell(states[sym], whole)
        raw = split_raw(raw_total, [float(p) for p in parts])
        market.sell(seller, sym, raw, label=f"round {rnd} {kind} sale of {sym}")
        after = market.price(sym)
        for i, amt in enumerate(raw):
            sales.append({"round": rnd, "kind": kind, "asset": sym, "venue": i, "amount": amt / 10**dec,
                          "price_before": before, "price_after": after})

    def push() -> None:
        pusher.push({**{s: market.rel(s) for s in venues}, **fixed})

    for sym in sorted(shocks):
        s = float(shocks[sym])
        if s <= 0:
            continue
        if sym in curves:
            q = float(curves[sym].amount_to_price(states[sym], p0[sym] * (1 - s)))
            if not math.isfinite(q):
                raise InputError(f"shock on {sym}: price {p0[sym] * (1 - s):g} is beyond what its pools can reach")
            raw_total = int(round(q * 10 ** snapshot.assets[sym].decimals))
            funder.give(book.tokens[sym].address, SHOCK_SELLER_ADDRESS, raw_total)
            sell(sym, raw_total, SHOCK_SELLER_ADDRESS, 0, "shock")
        else:
            fixed[sym] = Fraction(1) - Fraction(s)
    push()
    shocked = prices()

    rows: list[dict] = []
    rnd = 0
    while True:
        found = [(liq, u) for liq in liquidators for u in liq.find()]
        if not found:
            break
        rnd += 1
        if rnd > max_rounds:
            raise ConvergenceError(f"validation: still liquidating after max_rounds={max_rounds} rounds on the fork")
        received: dict[str, int] = {}
        for liq, user in found:
            event = liq.liquidate(user)
            rows.append(_record(rnd, event, snapshot))
            received[event.collateral_asset] = received.get(event.collateral_asset, 0) + event.collateral_received
            token = book.tokens[event.collateral_asset].address.lower()
            held[token] = held.get(token, 0) + event.collateral_received
        for sym in sorted(received):
            if received[sym] > 0:
                sell(sym, received[sym], LIQUIDATOR_ADDRESS, rnd, "liquidation")
        held.clear()
        push()

    liq = pd.DataFrame(rows, columns=list(LIQUIDATION_COLUMNS))
    by_protocol = {p: Totals.of(g) for p, g in liq.groupby("protocol", sort=True)} if len(liq) else {}
    return Execution(shocked, prices(), rnd, liq, pd.DataFrame(sales, columns=list(SALE_COLUMNS)),
                     chain.transactions - tx0, time.perf_counter() - t0, by_protocol, Totals.of(liq))

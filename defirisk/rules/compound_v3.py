"""Compound V3 (Comet) absorb, vectorised. One base (borrowed) asset per market (params `base`).

Liquidatable when sum_j C_j P_j LCF_j < D * P_base (`liquidate_collateral_factor` per asset).
absorb takes ALL collateral; the account is credited sum_j C_j P_j LF_j (`liquidation_factor`);
the debt is cleared, a credit above the debt becomes the user's base balance, and a shortfall
max(0, D P_base - credit) is absorbed by the protocol's reserves (reported as bad debt). The protocol
sells the absorbed collateral (buyCollateral at a store-front discount to arbitrageurs who sell it on
the venue): the whole seized amount reaches the market.
"""
from __future__ import annotations

import numpy as np

from defirisk.errors import InputError
from defirisk.rules.base import BookState, Events, Rule, Step


class CompoundV3(Rule):
    protocol = "compound-v3"
    independent = True

    def __init__(self, market, symbols, prices0=None):
        super().__init__(market, symbols, prices0)
        self.base = self.symbol_param("base")
        k = len(symbols)
        self.lcf, self.lf = np.zeros(k), np.zeros(k)
        self.known = np.zeros(k, dtype=bool)
        for sym in market.assets:
            j = self.index[sym]
            if j == self.base:
                continue
            self.known[j] = True
            self.lcf[j] = self.asset_param(sym, "liquidate_collateral_factor", lo=0.0, hi=1.0)
            self.lf[j] = self.asset_param(sym, "liquidation_factor", lo=0.0, hi=1.0)
        self.store_front = self.param("store_front_price_factor", lo=0.0, hi=1.0, default=0.5)

    def check_book(self, coll, debt, accounts):
        bad = (coll > 0) & ~self.known
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise InputError(f"{self.where()}: account {accounts[i]} supplies {self.symbols[j]}, not a collateral asset of this market")
        others = np.ones(len(self.symbols), dtype=bool)
        others[self.base] = False
        bad = (debt[:, others] > 0).any(axis=1)
        if bad.any():
            raise InputError(f"{self.where()}: account {accounts[np.flatnonzero(bad)[0]]} owes an asset other than the base {self.symbols[self.base]}")

    def weights(self, state: BookState, prices):
        return (state.coll * prices * self.lcf).sum(axis=1), state.debt[:, self.base] * prices[self.base]

    def liquidate(self, state, oracle, market, shared) -> Step:
        rows = np.flatnonzero(self.liquidatable(state, oracle))
        if len(rows) == 0:
            return Step(state, Events.empty())
        C = state.coll[rows]
        debt_usd = state.debt[rows, self.base] * oracle[self.base]
        val = C * oracle
        credit = (val * self.lf).sum(axis=1)
        repaid_usd = np.minimum(debt_usd, credit)
        bad = np.maximum(debt_usd - credit, 0.0)
        # one event row per seized collateral asset; repaid and bad debt split by collateral value
        ri, cj = np.nonzero(C > 0)
        share = val[ri, cj] / val.sum(axis=1)[ri]
        coll, debt = state.coll.copy(), state.debt.copy()
        coll[rows] = 0.0
        debt[rows, self.base] = 0.0
        pb = oracle[self.base]
        ev = Events(rows[ri], cj, C[ri, cj], C[ri, cj], np.full(len(ri), self.base), repaid_usd[ri] * share / pb,
                    val[ri, cj], repaid_usd[ri] * share, bad[ri] * share)
        return Step(state.evolve(coll=coll, debt=debt), ev)

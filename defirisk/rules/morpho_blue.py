"""Morpho Blue liquidate, vectorised: one collateral and one loan asset per market (params
`collateral`, `loan`, `lltv`).

Liquidatable when C * P_c * LLTV < D * P_l. Incentive LIF = min(1.15, 1 / (1 - 0.3 * (1 - LLTV))).
No close factor: the liquidator repays ALL the debt and seizes D * P_l * LIF / P_c; if that exceeds
the collateral it seizes all of it, repays C * P_c / (LIF * P_l) and the rest of the debt is bad debt
(Morpho socialises it to lenders when collateral reaches zero). Remaining collateral stays with the
borrower, whose position is then debt-free.

The market's own oracle: Morpho compares and seizes with its oracle's `price()` (collateral in loan
units), which need not equal the USD ratio of assets.csv (exchange-rate oracles, fixed prices). When
`params.oracle_price` (whole loan tokens per whole collateral token) is present the rule anchors to it
and moves it with the USD prices: oracle(p) = oracle_price * (P_c/P_c0) / (P_l/P_l0). In USD terms that
is a fixed factor k = oracle_price * P_l0 / P_c0 on the collateral price: liquidatable when
C * P_c * k * LLTV < D * P_l, seized = D * LIF / oracle(p) = D * P_l * LIF / (P_c * k). Without
`oracle_price`, k = 1 (the USD ratio is the oracle).
"""
from __future__ import annotations

import numpy as np

from defirisk.errors import InputError
from defirisk.model import MarketParams
from defirisk.rules.base import BookState, Events, Rule, Step

MAX_LIF = 1.15
LIF_CURSOR = 0.3


def incentive_factor(lltv: float) -> float:
    return min(MAX_LIF, 1.0 / (1.0 - LIF_CURSOR * (1.0 - lltv)))


class MorphoBlue(Rule):
    protocol = "morpho-blue"
    independent = True

    def __init__(self, market: MarketParams, symbols, prices0=None):
        super().__init__(market, symbols, prices0)
        self.lltv = self.param("lltv", lo=0.0, hi=1.0)
        self.lif = incentive_factor(self.lltv)
        self.c = self.symbol_param("collateral")
        self.l = self.symbol_param("loan")
        if self.c == self.l:
            raise InputError(f"{self.where()}: collateral and loan must differ")
        self.k = 1.0  # market oracle / USD ratio at the snapshot (see the module docstring)
        if self.market.params.get("oracle_price") is not None:
            op = self.param("oracle_price", lo=0.0, hi=1e300)
            if op <= 0:
                raise InputError(f"{self.where()}, params.oracle_price: must be > 0, got {op!r}")
            if self.prices0 is None:
                raise InputError(f"{self.where()}: params.oracle_price needs the snapshot's USD prices to anchor to")
            self.k = op * float(self.prices0[self.l]) / float(self.prices0[self.c])

    def check_book(self, coll, debt, accounts):
        others = np.ones(len(self.symbols), dtype=bool)
        others[self.c] = False
        bad = (coll[:, others] > 0).any(axis=1)
        if bad.any():
            raise InputError(f"{self.where()}: account {accounts[np.flatnonzero(bad)[0]]} holds collateral other than {self.symbols[self.c]}")
        others = np.ones(len(self.symbols), dtype=bool)
        others[self.l] = False
        bad = (debt[:, others] > 0).any(axis=1)
        if bad.any():
            raise InputError(f"{self.where()}: account {accounts[np.flatnonzero(bad)[0]]} owes an asset other than {self.symbols[self.l]}")

    def weights(self, state: BookState, prices):
        return state.coll[:, self.c] * (prices[self.c] * self.k * self.lltv), state.debt[:, self.l] * prices[self.l]

    def liquidate(self, state, oracle, market, shared) -> Step:
        rows = np.flatnonzero(self.liquidatable(state, oracle))
        if len(rows) == 0:
            return Step(state, Events.empty())
        pc, pl = oracle[self.c], oracle[self.l]
        pk = pc * self.k  # the market oracle's collateral price, in USD
        C, D = state.coll[rows, self.c], state.debt[rows, self.l]
        seized = D * pl * self.lif / pk
        over = seized >= C
        seized = np.where(over, C, seized)
        repaid = np.where(over, C * pk / (self.lif * pl), D)
        bad = (D - repaid) * pl
        coll, debt = state.coll.copy(), state.debt.copy()
        coll[rows, self.c] = np.where(over, 0.0, C - seized)
        debt[rows, self.l] = 0.0
        n = len(rows)
        ev = Events(rows, np.full(n, self.c), seized, seized, np.full(n, self.l), repaid, seized * pc, repaid * pl, bad)
        return Step(state.evolve(coll=coll, debt=debt), ev)

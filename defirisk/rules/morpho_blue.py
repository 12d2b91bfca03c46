"""Morpho Blue liquidate, vectorised: one collateral and one loan asset per market (params
`collateral`, `loan`, `lltv`).

Liquidatable when C * P_c * LLTV < D * P_l. Incentive LIF = min(1.15, 1 / (1 - 0.3 * (1 - LLTV))).
No close factor: the liquidator repays ALL the debt and seizes D * P_l * LIF / P_c; if that exceeds
the collateral it seizes all of it, repays C * P_c / (LIF * P_l) and the rest of the debt is bad debt
(Morpho socialises it to lenders when collateral reaches zero). Remaining collateral stays with the
borrower, whose position is then debt-free.
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

    def __init__(self, market: MarketParams, symbols):
        super().__init__(market, symbols)
        self.lltv = self.param("lltv", lo=0.0, hi=1.0)
        self.lif = incentive_factor(self.lltv)
        self.c = self.symbol_param("collateral")
        self.l = self.symbol_param("loan")
        if self.c == self.l:
            raise InputError(f"{self.where()}: collateral and loan must differ")

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
        return state.coll[:, self.c] * prices[self.c] * self.lltv, state.debt[:, self.l] * prices[self.l]

    def liquidate(self, state, oracle, market, shared) -> Step:
        rows = np.flatnonzero(self.liquidatable(state, oracle))
        if len(rows) == 0:
            return Step(state, Events.empty())
        pc, pl = oracle[self.c], oracle[self.l]
        C, D = state.coll[rows, self.c], state.debt[rows, self.l]
        seized = D * pl * self.lif / pc
        over = seized >= C
        seized = np.where(over, C, seized)
        repaid = np.where(over, C * pc / (self.lif * pl), D)
        bad = (D - repaid) * pl
        coll, debt = state.coll.copy(), state.debt.copy()
        coll[rows, self.c] = np.where(over, 0.0, C - seized)
        debt[rows, self.l] = 0.0
        n = len(rows)
        ev = Events(rows, np.full(n, self.c), seized, seized, np.full(n, self.l), repaid, seized * pc, repaid * pl, bad)
        return Step(state.evolve(coll=coll, debt=debt), ev)

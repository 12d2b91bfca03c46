"""Liquity v1 liquidateTroves, one batch per round over troves in ascending ICR order.

params: collateral (symbol, ETH/WETH), debt (symbol, LUSD), mcr (1.1), ccr (1.5), stability_pool
(LUSD deposits), sp_sell_share (share of the ETH the stability pool gains that depositors sell on the
venue; default 1.0), gas_comp_coll (0.005). ICR = coll * P / debt (LUSD counted at $1, as Liquity does).
Normal mode (TCR >= CCR): ICR < MCR -> 0.5% of coll to the liquidator (sold), debt offset against
the stability pool up to its size with the matching share of the rest of the coll going to the pool,
the remaining debt and coll redistributed to all other active troves pro rata to their collateral
(our stake proxy). Recovery mode (TCR < CCR, re-checked after every trove in the batch): ICR <= 100%
-> pure redistribution; 100% < ICR < MCR -> as normal; MCR <= ICR < TCR -> only if the pool covers
the whole debt: offset it all, collateral capped at debt * MCR / P (surplus back to the owner, not
sold); a trove the remaining pool cannot cover is skipped and the batch goes on with the next one
(TroveManager returns zero values for it). The last active trove is never liquidated. Redistributed debt not backed by the redistributed
collateral's value is reported as (socialised) bad debt.
"""
from __future__ import annotations

import numpy as np

from defirisk.errors import InputError
from defirisk.rules.base import BookState, Events, Rule, Step


class Liquity(Rule):
    protocol = "liquity"

    def __init__(self, market, symbols, prices0=None):
        super().__init__(market, symbols, prices0)
        self.c = self.symbol_param("collateral")
        self.d = self.symbol_param("debt", "LUSD")
        self.mcr = self.param("mcr", lo=1.0, hi=10.0, default=1.1)
        self.ccr = self.param("ccr", lo=1.0, hi=10.0, default=1.5)
        self.sp0 = self.param("stability_pool", lo=0.0, hi=1e30)
        self.sell_share = self.param("sp_sell_share", lo=0.0, hi=1.0, default=1.0)
        self.gas = self.param("gas_comp_coll", lo=0.0, hi=0.1, default=0.005)

    def check_book(self, coll, debt, accounts):
        for side, arr, j in (("collateral", coll, self.c), ("debt", debt, self.d)):
            others = np.ones(len(self.symbols), dtype=bool)
            others[j] = False
            bad = (arr[:, others] > 0).any(axis=1)
            if bad.any():
                raise InputError(f"{self.where()}: trove {accounts[np.flatnonzero(bad)[0]]} has {side} other than {self.symbols[j]}")

    def init_extra(self, emode):
        return {"sp": self.sp0}

    def weights(self, state: BookState, prices):
        return state.coll[:, self.c] * prices[self.c], state.debt[:, self.d] * self.mcr

    def liquidatable(self, state, prices):
        coll, debt = state.coll[:, self.c], state.debt[:, self.d]
        active = debt > 0
        if active.sum() <= 1:
            return np.zeros(len(debt), dtype=bool)
        p = prices[self.c]
        tcr = coll[active].sum() * p / debt[active].sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            icr = np.where(active, coll * p / np.where(active, debt, 1.0), np.inf)
        if tcr >= self.ccr:
            return active & (icr < self.mcr)
        return active & ((icr < self.mcr) | ((icr < tcr) & (debt <= state.extra["sp"])))

    def liquidate(self, state, oracle, market, shared) -> Step:
        liq = self.liquidatable(state, oracle)
        if not liq.any():
            return Step(state, Events.empty())
        p, p_lusd = oracle[self.c], oracle[self.d]
        coll, debt = state.coll[:, self.c].copy(), state.debt[:, self.d].copy()
        sp = float(state.extra["sp"])
        rows = np.flatnonzero(liq)
        rows = rows[np.lexsort((rows, coll[rows] / debt[rows]))]
        out = []
        for i in rows:
            active = debt > 0
            if active.sum() <= 1:
                break
            tcr = coll[active].sum() * p / debt[active].sum()
            recovery = tcr < self.ccr
            icr = coll[i] * p / debt[i]
            D, C = debt[i], coll[i]
            if not recovery and icr >= self.mcr:
                break
            if recovery and icr >= self.mcr:
                if not (icr < tcr and D <= sp):
                    # TroveManager._liquidateRecoveryMode returns zero values and the sequence moves on:
                    # a later trove with a smaller debt may still fit in what is left of the pool.
                    continue
                seized = D * self.mcr / p
                gas = seized * self.gas
                to_sp, offset, d_red, c_red = seized - gas, D, 0.0, 0.0
            else:
                seized = C
                gas = C * self.gas
                rest = C - gas
                offset = 0.0 if (recovery and icr <= 1.0) else min(D, sp)
                to_sp = rest * offset / D
                d_red, c_red = D - offset, rest - to_sp
            sp -= offset
            coll[i], debt[i] = 0.0, 0.0
            if d_red > 0:
                others = debt > 0
                w = coll[others] / coll[others].sum()
                coll[others] += c_red * w
                debt[others] += d_red * w
            bad = max(0.0, d_red * p_lusd - c_red * p)
            out.append((i, seized, to_sp * self.sell_share + gas, offset, bad))
        if not out:
            return Step(state, Events.empty())
        a = np.array(out)
        idx = a[:, 0].astype(np.int64)
        n = len(idx)
        C2, D2 = state.coll.copy(), state.debt.copy()
        C2[:, self.c], D2[:, self.d] = coll, debt
        ev = Events(idx, np.full(n, self.c), a[:, 1], a[:, 2], np.full(n, self.d), a[:, 3],
                    a[:, 1] * p, a[:, 3] * p_lusd, a[:, 4])
        extra = dict(state.extra)
        extra["sp"] = sp
        return Step(state.evolve(coll=C2, debt=D2, extra=extra), ev)

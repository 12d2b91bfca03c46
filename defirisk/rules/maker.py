"""MakerDAO / Sky Dog.bark + Clipper auction, one ilk per market (params below).

params: collateral (symbol), debt (symbol, default DAI), liquidation_ratio (mat), chop (or penalty,
e.g. 1.13), dust (DAI), hole (DAI, this ilk), Hole (DAI, all Maker markets; default unlimited).
bark when ink * P_osm < debt * mat (P_osm: the collateral's oracle price, which the solver lags by
`oracle_lag_s`; par = 1 so the DAI market price does not enter). Urns are barked riskiest first
(lowest ink*P/debt, then book order). For each: room = min(Hole - Dirt, hole - dirt); stop when
room <= 0 or room < dust; dart = min(debt, room / chop); a partial bark that would leave less than
dust takes the whole urn, one that would itself be below dust is skipped; dink = ink * dart / debt;
tab = dart * chop. The auction is modelled as settling within the round at the keeper's market
price: the keeper buys min(dink, tab * P_dai / P_mkt) collateral and sells it on the venue; the rest
of dink returns to the owner (not sold); bad debt = max(0, dart * P_dai - proceeds).
Auctions settle within the round, so Dirt and dirt free up again for the next round.
"""
from __future__ import annotations

import math

import numpy as np

from defirisk.errors import InputError
from defirisk.rules.base import BookState, Events, Rule, Step


class Maker(Rule):
    protocol = "maker"
    independent = True  # hole/Hole room is per call; barking one urn never changes another's ratio

    def __init__(self, market, symbols, prices0=None):
        super().__init__(market, symbols, prices0)
        self.c = self.symbol_param("collateral")
        self.d = self.symbol_param("debt", "DAI")
        self.mat = self.param("liquidation_ratio", lo=1.0, hi=100.0, aliases=("mat",))
        self.chop = self.param("chop", lo=1.0, hi=10.0, aliases=("penalty",), default=1.13)
        self.dust = self.param("dust", lo=0.0, hi=1e30, default=0.0)
        self.hole = self.param("hole", lo=0.0, hi=1e30, default=math.inf)
        self.Hole = self.param("Hole", lo=0.0, hi=1e30, default=math.inf)

    def check_book(self, coll, debt, accounts):
        for side, arr, j in (("collateral", coll, self.c), ("debt", debt, self.d)):
            others = np.ones(len(self.symbols), dtype=bool)
            others[j] = False
            bad = (arr[:, others] > 0).any(axis=1)
            if bad.any():
                raise InputError(f"{self.where()}: urn {accounts[np.flatnonzero(bad)[0]]} has {side} other than {self.symbols[j]}")

    def weights(self, state: BookState, prices):
        return state.coll[:, self.c] * prices[self.c], state.debt[:, self.d] * self.mat

    def liquidate(self, state, oracle, market, shared) -> Step:
        liq = self.liquidatable(state, oracle)
        if not liq.any():
            return Step(state, Events.empty())
        ink, art = state.coll[:, self.c].copy(), state.debt[:, self.d].copy()
        rows = np.flatnonzero(liq)
        ratio = ink[rows] * oracle[self.c] / art[rows]
        rows = rows[np.lexsort((rows, ratio))]
        p_mkt, p_dai = market[self.c], oracle[self.d]
        dirt = 0.0
        out = []
        for i in rows:
            room = min(self.Hole - shared.get("maker.Dirt", 0.0), self.hole - dirt)
            if room <= 0 or room < self.dust:
                break
            debt_i = art[i]
            dart = min(debt_i, room / self.chop)
            if dart < debt_i:
                if debt_i - dart < self.dust:
                    dart = debt_i
                elif dart < self.dust:
                    continue
            dink = ink[i] * dart / debt_i
            tab = dart * self.chop
            dirt += tab
            shared["maker.Dirt"] = shared.get("maker.Dirt", 0.0) + tab
            sold = min(dink, tab * p_dai / p_mkt)
            proceeds = sold * p_mkt
            bad = max(0.0, dart * p_dai - proceeds)
            ink[i] = 0.0 if dart == debt_i else ink[i] - dink
            art[i] = debt_i - dart
            out.append((i, dink, sold, dart - bad / p_dai, bad))
        if not out:
            return Step(state, Events.empty())
        a = np.array(out)
        idx = a[:, 0].astype(np.int64)
        n = len(idx)
        coll, debt = state.coll.copy(), state.debt.copy()
        coll[:, self.c], debt[:, self.d] = ink, art
        ev = Events(idx, np.full(n, self.c), a[:, 1], a[:, 2], np.full(n, self.d), a[:, 3],
                    a[:, 1] * oracle[self.c], a[:, 3] * p_dai, a[:, 4])
        return Step(state.evolve(coll=coll, debt=debt), ev)

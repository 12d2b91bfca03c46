"""Turn the long positions table into one dense book per market (accounts x assets)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from defirisk.errors import InputError
from defirisk.model import Snapshot
from defirisk.rules import BookState, Rule, rule_for
from defirisk.solver.oracles import BookOracle


@dataclass(frozen=True, eq=False)
class Book:
    rule: Rule
    accounts: np.ndarray  # account ids (str), row order of the matrices
    state0: BookState
    oracle: BookOracle    # how this market's protocol prices each asset from market prices

    @property
    def protocol(self) -> str:
        return self.rule.market.protocol

    @property
    def market(self) -> str:
        return self.rule.market.market


def build_books(snapshot: Snapshot) -> list[Book]:
    """Books in a fixed order: by (protocol, market). Markets without positions get empty books."""
    symbols = snapshot.symbols
    sym_idx = {s: i for i, s in enumerate(symbols)}
    k = len(symbols)
    f = snapshot.positions._frame
    groups = {key: g for key, g in f.groupby(["protocol", "market"], sort=False)} if len(f) else {}
    prices0 = np.array([snapshot.assets[s].price_usd for s in symbols], dtype=float)
    books = []
    for m in sorted(snapshot.markets, key=lambda m: m.key):
        oracle = BookOracle(m, symbols)
        # rules that anchor to their protocol's own oracle (Morpho `oracle_price`) anchor to its answers
        rule = rule_for(m, symbols, oracle.formula(prices0))
        g = groups.get(m.key)
        if g is None or len(g) == 0:
            z = np.zeros((0, k))
            books.append(Book(rule, np.array([], dtype=object), BookState(z, z.copy(), rule.init_extra(np.zeros(0, dtype=np.int64))), oracle))
            continue
        codes, accounts = pd.factorize(g["account"].to_numpy(), sort=False)
        n = len(accounts)
        a = g["asset"].map(sym_idx).to_numpy(dtype=np.int64)
        flat = codes * k + a
        amt = g["amount"].to_numpy()
        is_coll = (g["side"] == "collateral").to_numpy()
        coll = np.bincount(flat[is_coll], weights=amt[is_coll], minlength=n * k).reshape(n, k)
        debt = np.bincount(flat[~is_coll], weights=amt[~is_coll], minlength=n * k).reshape(n, k)
        em = g["emode"].to_numpy()
        emode = np.zeros(n, dtype=np.int64)
        np.maximum.at(emode, codes, em)
        if (em != emode[codes]).any():
            i = int(np.flatnonzero(em != emode[codes])[0])
            raise InputError(f"positions: account {g['account'].iloc[i]} in {m.protocol}/{m.market} has conflicting emode values")
        accounts = np.asarray(accounts, dtype=object)
        rule.check_book(coll, debt, accounts)
        books.append(Book(rule, accounts, BookState(coll, debt, rule.init_extra(emode)), oracle))
    return books

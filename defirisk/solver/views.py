"""The three static views users confuse with a cascade: health now, liquidatable now, and the static
liquidation price of each position in one asset (other prices held, no feedback)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from defirisk.errors import InputError
from defirisk.model import Snapshot
from defirisk.solver.engine import Prepared, prepare

_COLS = ("protocol", "market", "account", "health_factor", "collateral_usd", "debt_usd")


def _frame(prep: Prepared, per_book) -> pd.DataFrame:
    parts = [pd.DataFrame(d) for d in per_book if len(d["account"])]
    if not parts:
        return pd.DataFrame(columns=list(next(iter(per_book), {c: [] for c in _COLS}).keys()) if per_book else list(_COLS))
    return pd.concat(parts, ignore_index=True)


def health_factors(snapshot: Snapshot, *, prepared: Prepared | None = None) -> pd.DataFrame:
    """Per account: the protocol's health factor (Aave HF; elsewhere liquidation-weighted collateral
    over debt, e.g. Morpho C*P*LLTV/D, Maker ink*P/(debt*mat), Liquity ICR/MCR); 1 = threshold."""
    prep = prepared or prepare(snapshot)
    rows = []
    for bi, b in enumerate(prep.books):
        st = b.state0
        hf = b.rule.health(st, prep.book_oracle0(bi))
        rows.append({"protocol": b.protocol, "market": b.market, "account": b.accounts, "health_factor": hf,
                     "collateral_usd": (st.coll * prep.p0).sum(axis=1), "debt_usd": (st.debt * prep.p0).sum(axis=1)})
    return _frame(prep, rows).reindex(columns=list(_COLS))


def liquidatable_now(snapshot: Snapshot, *, prepared: Prepared | None = None) -> pd.DataFrame:
    """Accounts their protocol would liquidate at the snapshot's oracle prices (incl. Liquity recovery mode)."""
    prep = prepared or prepare(snapshot)
    hf = health_factors(snapshot, prepared=prep)
    masks = [b.rule.liquidatable(b.state0, prep.book_oracle0(bi)) for bi, b in enumerate(prep.books) if len(b.accounts)]
    mask = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)
    return hf[mask].reset_index(drop=True)


def liquidation_levels(snapshot: Snapshot, asset: str, *, prepared: Prepared | None = None) -> pd.DataFrame:
    """Static MARKET price of `asset` at which each position touched by it becomes liquidatable, other
    market prices held.

    The rules' two sides are linear in each oracle price and every oracle formula is linear in the
    market price (solver/oracles.py), so coll(p) = c0 + c1 p, debt(p) = d0 + d1 p and the level is
    (d0 - c0) / (c1 - d1); `direction` says whether the account is liquidatable below it (asset is net
    collateral) or above it (net debt). A position is touched when it holds or owes `asset` or an asset
    whose oracle is a ratio of it (a wstETH position priced as rate x ETH moves with WETH, not with
    wstETH's own market). Deviation thresholds are ignored (the answer trails by at most the
    threshold); mode switches (Liquity recovery) too."""
    prep = prepared or prepare(snapshot)
    if asset not in prep.symbols:
        raise InputError(f"unknown asset {asset!r} (assets: {', '.join(prep.symbols)})")
    j = prep.symbols.index(asset)
    rows = []
    for b in prep.books:
        st = b.state0
        moves = b.oracle.moves_with(j)
        touches = ((st.coll[:, moves] > 0) | (st.debt[:, moves] > 0)).any(axis=1)
        if not touches.any():
            continue
        p_zero, p_one = prep.p0.copy(), prep.p0.copy()
        p_zero[j], p_one[j] = 0.0, 1.0
        c0, d0 = b.rule.weights(st, b.oracle.formula(p_zero))
        c1, d1 = b.rule.weights(st, b.oracle.formula(p_one))
        c1, d1 = c1 - c0, d1 - d0
        with np.errstate(divide="ignore", invalid="ignore"):
            level = (d0 - c0) / (c1 - d1)
        direction = np.where(c1 > d1, "below", "above")
        level = np.where(np.isfinite(level) & (level > 0), level, np.nan)
        rows.append({"protocol": b.protocol, "market": b.market, "account": b.accounts[touches],
                     "liquidation_price": level[touches], "direction": direction[touches],
                     "collateral_usd": (st.coll[touches] * prep.p0).sum(axis=1), "debt_usd": (st.debt[touches] * prep.p0).sum(axis=1)})
    cols = ["protocol", "market", "account", "liquidation_price", "direction", "collateral_usd", "debt_usd"]
    if not rows:
        return pd.DataFrame(columns=cols)
    return pd.concat([pd.DataFrame(r) for r in rows], ignore_index=True)[cols].sort_values(
        "liquidation_price", ascending=False, kind="stable").reset_index(drop=True)

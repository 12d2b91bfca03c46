"""Which snapshots compile for the single-asset fast curves, and the per-position arrays they start from.

Both compiled curves (curve.py: fixed-price pieces; compiled_descent.py: the band = 0 descent) move
the price of ONE asset X and hold every other price at p0. That is exact only when:

- no book uses an oracle formula other than the market price itself (`Prepared.oracles`: every
  book's `identity`), since the compiled pieces read the market price as the protocol's price;
- no cross venues (`Prepared.router`): X's price is its USD-quoted venues' alone;
- no holder of X also holds collateral in another asset with a venue (its liquidation would sell that
  asset too and move it: Comet absorb seizes ALL collateral);
- nothing that does not hold X is liquidatable at p0 (it would be liquidated at every shock, outside
  the pieces);
- every holder of X is a closed form of X's price: Morpho Blue; Compound V3 (other collateral without
  a venue is allowed); Maker urns of X; Aave v3.0-3.2 accounts with X as the only collateral, one debt
  asset, LT > 0 and LB x LT < 0.95 (the HF after a 50% call, 2 HF - LB LT, then rises); no holder owes
  X; Liquity troves must not hold X nor be liquidatable.

`holders` returns None when any condition fails. Aave's LT is the one its HF uses: v3.0-3.4 truncate
the (single-collateral) average LT to whole bps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from defirisk.rules.aave_v3 import CLOSE_FACTOR_HF


@dataclass(frozen=True, eq=False)
class Holders:
    """The positions of one book that hold X, in book order (one entry per holder)."""

    protocol: str
    rule: Any
    Cx: np.ndarray         # X collateral, tokens
    dusd: np.ndarray       # debt, USD at p0
    debt: np.ndarray       # (n, k) debt, tokens
    others_c: np.ndarray   # (n, k-1) other collateral (assets without a venue), tokens
    others_p: np.ndarray   # (k-1,) their USD prices at p0
    extra: dict = field(default_factory=dict)  # aave-v3: lt (as HF uses it), lb per holder


def oracles_identity(prep) -> bool:
    """True unless some book prices an asset by an oracle formula other than its market price."""
    oracles = getattr(prep, "oracles", None)
    if oracles is None:
        return True
    for o in oracles:
        items = o if isinstance(o, (list, tuple)) else [o]
        if not all(getattr(x, "identity", False) for x in items):
            return False
    return True


def holders(prep, j: int) -> list[Holders] | None:
    """Every book's holders of asset index j, or None if the snapshot does not compile (module doc)."""
    if not oracles_identity(prep) or getattr(prep, "router", None) is not None:
        return None
    p = prep.p0
    other_volatile = np.zeros(len(p), dtype=bool)
    other_volatile[list(prep.curves)] = True
    other_volatile[j] = False
    out: list[Holders] = []
    for b in prep.books:
        rule, st = b.rule, b.state0
        C, D = st.coll, st.debt
        if len(C) == 0:
            continue
        holds = C[:, j] > 0
        every = bool(holds.all())
        sel = slice(None) if every else holds   # a view, not a copy, when every account holds X
        proto = b.protocol
        if other_volatile.any() and (C[sel][:, other_volatile] > 0).any():
            return None  # a holder of X also sells another volatile asset when liquidated
        if not every and rule.liquidatable(st, p)[~holds].any():
            return None  # liquidated at every shock, whatever X does: outside the pieces
        if proto == "liquity":
            if holds.any() or rule.liquidatable(st, p).any():
                return None
            continue
        if not holds.any():
            continue  # never sells X and not liquidatable at p0: X falling cannot make it so
        if (D[sel, j] > 0).any():
            return None
        others_c = np.delete(C[sel], j, axis=1)
        h = Holders(proto, rule, C[sel, j], D[sel] @ p, D[sel], others_c, np.delete(p, j))
        if proto == "maker":
            if rule.c != j:
                return None
        elif proto == "aave-v3":
            if rule.version >= (3, 3):
                return None
            if (others_c > 0).any() or ((D[holds] > 0).sum(axis=1) != 1).any():
                return None
            lt, lb = st.extra["lt"][holds, j], st.extra["lb"][holds, j]
            if rule.truncate_lt:
                lt = np.floor(lt * 1e4 + 1e-7) / 1e4
            if (lt <= 0).any() or (lb * lt >= CLOSE_FACTOR_HF).any():
                return None
            h.extra.update(lt=lt, lb=lb)
        elif proto not in ("morpho-blue", "compound-v3"):
            return None
        out.append(h)
    return out

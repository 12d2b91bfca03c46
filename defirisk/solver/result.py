"""Result objects of the solver (scipy-like: they say whether and how they converged)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

LIQUIDATION_COLUMNS = ("round", "protocol", "market", "account", "collateral_asset", "collateral_seized",
                       "collateral_seized_usd", "collateral_sold", "debt_asset", "debt_repaid", "debt_repaid_usd",
                       "bad_debt_usd")
SALE_COLUMNS = ("round", "kind", "asset", "venue", "amount", "price_before", "price_after", "via")
# Positions liquidatable at the end that no liquidator liquidated (liquidator economics, docs/model.md)
UNLIQUIDATED_COLUMNS = ("protocol", "market", "account", "collateral_usd", "debt_usd", "underwater")


def empty_unliquidated() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(UNLIQUIDATED_COLUMNS, (object, object, object, float, float, bool))})


def _json_number(x: Any) -> Any:
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def frame_records(df: pd.DataFrame) -> list[dict]:
    return [{k: _json_number(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


@dataclass(frozen=True)
class Totals:
    liquidated_collateral_usd: float = 0.0
    debt_repaid_usd: float = 0.0
    bad_debt_usd: float = 0.0
    accounts_liquidated: int = 0

    @staticmethod
    def of(liq: pd.DataFrame) -> "Totals":
        if len(liq) == 0:
            return Totals()
        return Totals(float(liq["collateral_seized_usd"].sum()), float(liq["debt_repaid_usd"].sum()),
                      float(liq["bad_debt_usd"].sum()), int(liq[["market", "account"]].drop_duplicates().shape[0]))

    def to_dict(self) -> dict:
        return {"liquidated_collateral_usd": self.liquidated_collateral_usd, "debt_repaid_usd": self.debt_repaid_usd,
                "bad_debt_usd": self.bad_debt_usd, "accounts_liquidated": self.accounts_liquidated}


@dataclass(frozen=True, eq=False)
class CascadeResult:
    """Outcome of one cascade. Prices in USD; `liquidations` one row per (account, seized collateral)
    per liquidation call; `sales` one row per asset x venue x round (kind "shock" = the exogenous sale);
    `not_liquidated` one row per position still liquidatable at the end that no liquidator liquidated
    (liquidator economics: the call did not pay), USD at the end prices."""

    mode: str
    initial_prices: Mapping[str, float]
    shocks: Mapping[str, float]
    shocked_prices: Mapping[str, float]
    end_prices: Mapping[str, float]
    rounds: int
    converged: bool
    iterations: int
    totals: Totals
    by_protocol: Mapping[str, Totals]
    liquidations: pd.DataFrame
    sales: pd.DataFrame
    assumptions: Mapping[str, Any] = field(default_factory=dict)
    not_liquidated: pd.DataFrame = field(default_factory=empty_unliquidated)

    @property
    def not_liquidated_debt_usd(self) -> float:
        """Liquidatable, not liquidated: debt USD of the positions in `not_liquidated`."""
        return float(self.not_liquidated["debt_usd"].sum()) if len(self.not_liquidated) else 0.0

    @property
    def not_liquidated_underwater_usd(self) -> float:
        """The part of `not_liquidated_debt_usd` owed by underwater positions (debt > collateral value)."""
        nl = self.not_liquidated
        return float(nl.loc[nl["underwater"].astype(bool), "debt_usd"].sum()) if len(nl) else 0.0

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "shocks": dict(self.shocks),
            "initial_prices": dict(self.initial_prices),
            "shocked_prices": dict(self.shocked_prices),
            "end_prices": dict(self.end_prices),
            "rounds": self.rounds,
            "converged": self.converged,
            "iterations": self.iterations,
            "totals": self.totals.to_dict(),
            "by_protocol": {p: t.to_dict() for p, t in self.by_protocol.items()},
            "liquidations": frame_records(self.liquidations),
            "sales": frame_records(self.sales),
            "assumptions": dict(self.assumptions),
            "not_liquidated": {"debt_usd": self.not_liquidated_debt_usd,
                               "underwater_debt_usd": self.not_liquidated_underwater_usd,
                               "accounts": int(len(self.not_liquidated)),
                               "positions": frame_records(self.not_liquidated)},
        }


@dataclass(frozen=True)
class Cliff:
    """A discontinuity of the cascade curve (docs/model.md, "Curves and cliffs"): one jump, or a
    staircase of smaller adjacent jumps merged into one cliff.

    `trigger_shock` is where the first jump happens and `end_shock` where the last one completes
    (equal for a single jump; `steps` lists each jump's shock). `end_price_before`/`end_price` are the
    curve asset's end price just before `trigger_shock` and just after `end_shock`; the USD figures are
    the totals just after `end_shock`. `assets_moved` names every asset whose end price jumped, with
    its end price before/after; `jumps` lists every quantity that jumped (end prices, liquidated
    collateral USD, bad debt USD), with its size and threshold in the quantity's units."""

    trigger_shock: float
    trigger_price: float
    end_price_before: float
    end_price: float
    protocols: tuple[str, ...]
    liquidated_collateral_usd: float
    bad_debt_usd: float
    attribution: tuple[Mapping[str, Any], ...] = ()
    end_shock: float | None = None
    steps: tuple[float, ...] = ()
    assets_moved: tuple[Mapping[str, Any], ...] = ()
    jumps: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict:
        return {"trigger_shock": self.trigger_shock, "trigger_price": self.trigger_price,
                "end_price_before": self.end_price_before, "end_price": self.end_price,
                "protocols": list(self.protocols), "liquidated_collateral_usd": self.liquidated_collateral_usd,
                "bad_debt_usd": self.bad_debt_usd, "attribution": [dict(a) for a in self.attribution],
                "end_shock": self.trigger_shock if self.end_shock is None else self.end_shock,
                "steps": [float(x) for x in self.steps],
                "assets_moved": [{k: _json_number(v) for k, v in a.items()} for a in self.assets_moved],
                "jumps": [{k: _json_number(v) for k, v in q.items()} for q in self.jumps]}


@dataclass(frozen=True, eq=False)
class CurveResult:
    asset: str
    mode: str
    method: str  # "compiled" (sorted breakpoints, all shocks at once) or "general" (one solve per shock)
    curve: pd.DataFrame
    cliffs: tuple[Cliff, ...]
    converged: bool
    iterations: int
    # every asset's end price at each grid point (rows as in `curve`, one column per symbol)
    end_prices: pd.DataFrame | None = None
    # equilibrium mode: the band the points were computed with (0 = the exact descent; compiled curves)
    band: float | None = None

    def to_dict(self) -> dict:
        out = {"asset": self.asset, "mode": self.mode, "method": self.method, "converged": self.converged,
               "iterations": self.iterations, "curve": frame_records(self.curve),
               "cliffs": [c.to_dict() for c in self.cliffs]}
        if self.band is not None:
            out["band"] = self.band
        if self.end_prices is not None:
            out["end_prices"] = {str(c): [_json_number(v) for v in self.end_prices[c].to_numpy()] for c in self.end_prices.columns}
        return out

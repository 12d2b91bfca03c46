"""What every liquidation rule shares: the per-market book (accounts x assets matrices) and the
event record one round of liquidation calls returns.

A book holds whole-token amounts in dense (n_accounts, n_assets) float matrices whose columns follow
the snapshot's alphabetical asset order, so a price vector `prices[k]` (USD) lines up with column k.
Rules are pure: they take a BookState and prices and return a new BookState; nothing is mutated.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from defirisk.errors import InputError
from defirisk.model import MarketParams


@dataclass(frozen=True, eq=False)
class BookState:
    """Amounts of one market at one moment. `extra` holds protocol state (Liquity stability pool...)."""

    coll: np.ndarray  # (n, k) whole tokens
    debt: np.ndarray  # (n, k) whole tokens
    extra: Mapping[str, Any] = field(default_factory=dict)

    def evolve(self, **changes) -> "BookState":
        return replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Events:
    """One row per (account, collateral asset) seized in a round. Amounts in whole tokens, USD at the
    prices the liquidation used. `sold` is the part of `seized` that reaches the market."""

    account: np.ndarray        # int index into the book's accounts
    coll_asset: np.ndarray     # int asset index
    seized: np.ndarray
    sold: np.ndarray
    debt_asset: np.ndarray     # int asset index
    repaid: np.ndarray
    seized_usd: np.ndarray
    repaid_usd: np.ndarray
    bad_debt_usd: np.ndarray

    @staticmethod
    def empty() -> "Events":
        i, f = np.zeros(0, dtype=np.int64), np.zeros(0)
        return Events(i, i, f, f, i, f, f, f, f)

    @staticmethod
    def concat(parts: list["Events"]) -> "Events":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Events.empty()
        return Events(*(np.concatenate([getattr(p, name) for p in parts]) for name in Events.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.account)

    def take(self, rows: np.ndarray) -> "Events":
        """The same events with `account` mapped through `rows` (subset row -> book row)."""
        return replace(self, account=rows[self.account])


@dataclass(frozen=True, eq=False)
class Step:
    state: BookState
    events: Events


class Rule:
    """Base class of a protocol family's liquidation rule for one market."""

    protocol: str = ""
    # True when an account's liquidation depends only on its own row and the prices (no pool, TCR or
    # redistribution shared between accounts): the solver may then run a rule on a subset of rows.
    independent: bool = False

    def __init__(self, market: MarketParams, symbols: tuple[str, ...], prices0: np.ndarray | None = None):
        self.market = market
        self.symbols = symbols
        self.index = {s: i for i, s in enumerate(symbols)}
        # the snapshot's USD prices (assets.csv), column order: anchors protocol-own oracles (Morpho)
        self.prices0 = None if prices0 is None else np.asarray(prices0, dtype=float).copy()

    # -- helpers -------------------------------------------------------------------------------
    def where(self) -> str:
        return f"market {self.market.protocol}/{self.market.market}"

    def asset_param(self, sym: str, key: str, *, lo: float, hi: float, default: float | None = None) -> float:
        spec = self.market.assets.get(sym)
        if spec is None or key not in spec:
            if default is not None:
                return default
            raise InputError(f"{self.where()}: asset {sym} has no {key} in markets.json")
        return _checked(spec[key], f"{self.where()}, asset {sym}, field {key}", lo, hi)

    def param(self, key: str, *, lo: float, hi: float, default: float | None = None, aliases: tuple[str, ...] = ()) -> float:
        for k in (key, *aliases):
            if k in self.market.params:
                return _checked(self.market.params[k], f"{self.where()}, params.{k}", lo, hi)
        if default is not None:
            return default
        raise InputError(f"{self.where()}: params.{key} missing")

    def symbol_param(self, key: str, default: str | None = None) -> int:
        sym = self.market.params.get(key, default)
        if sym is None:
            raise InputError(f"{self.where()}: params.{key} (asset symbol) missing")
        if sym not in self.index:
            raise InputError(f"{self.where()}: params.{key} names unknown asset {sym!r}")
        return self.index[sym]

    def check_book(self, coll: np.ndarray, debt: np.ndarray, accounts: np.ndarray) -> None:
        """Reject positions the protocol cannot hold (named by account and asset)."""

    def subset(self, state: BookState, rows: np.ndarray) -> BookState:
        """The book restricted to `rows` (ascending): per-account arrays in `extra` (first axis = accounts)
        are sliced with them. Only meaningful for `independent` rules."""
        n = len(state.coll)
        extra = {k: (v[rows] if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n else v)
                 for k, v in state.extra.items()}
        return BookState(state.coll[rows], state.debt[rows], extra)

    def init_extra(self, emode: np.ndarray) -> dict:
        """Protocol state at the start (per-account parameters, pools); `emode` = account e-mode ids."""
        return {}

    # -- the rule --------------------------------------------------------------------------------
    def weights(self, state: BookState, prices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(collateral side, debt side) in USD: liquidatable (ignoring mode switches) iff coll < debt."""
        raise NotImplementedError

    def health(self, state: BookState, prices: np.ndarray) -> np.ndarray:
        wc, wd = self.weights(state, prices)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(wd > 0, wc / np.where(wd > 0, wd, 1.0), np.inf)

    def liquidatable(self, state: BookState, prices: np.ndarray) -> np.ndarray:
        wc, wd = self.weights(state, prices)
        return (wd > 0) & (wc < wd) & (state.coll.sum(axis=1) > 0)

    def liquidate(self, state: BookState, oracle: np.ndarray, market: np.ndarray, shared: dict) -> Step:
        """One round: every liquidatable account gets (at most) one liquidation call.
        `oracle` = prices the protocol sees, `market` = prices a keeper trades at."""
        raise NotImplementedError

    def settle(self, state: BookState, prices: np.ndarray, max_calls: int, market: np.ndarray | None = None) -> Events | None:
        """Liquidation calls at fixed prices (oracle = `prices`, market = `market`, default the same)
        until none is liquidatable: the events of all calls in call order, or None if still
        liquidatable after `max_calls` calls.
        Independent rules run on the liquidatable rows only (at fixed prices an account that is not
        liquidatable now never becomes so: nothing else in the book can change its row)."""
        rows = None
        if self.independent:
            rows = np.flatnonzero(self.liquidatable(state, prices))
            if len(rows) == 0:
                return Events.empty()
            state = self.subset(state, rows)
        evs = []
        for _ in range(max_calls):
            step = self.liquidate(state, prices, prices if market is None else market, {})
            if not len(step.events):
                ev = Events.concat(evs)
                return ev.take(rows) if rows is not None and len(ev) else ev
            state = step.state
            evs.append(step.events)
        return None


def _checked(raw: Any, where: str, lo: float, hi: float) -> float:
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise InputError(f"{where}: not a number: {raw!r}") from None
    if not np.isfinite(v) or v < lo or v > hi:
        raise InputError(f"{where}: {raw!r} outside [{lo}, {hi}]")
    return v

"""The core data model: frozen dataclasses every package hands to the next.

Units: token amounts are whole tokens (floats, not wei); prices are USD per whole token. Conversion
from on-chain integers happens once, in the readers. A Snapshot is immutable once built: mappings are
wrapped read-only and the positions table is a private copy whose numpy buffers are not writeable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from defirisk.errors import InputError

SNAPSHOT_FORMAT = "defirisk-snapshot/1"
PROTOCOLS = ("aave-v3", "compound-v3", "maker", "liquity", "morpho-blue")
SIDES = ("collateral", "debt")
VENUE_KINDS = ("constant_product", "uniswap_v3", "linear", "exponential", "sqrt", "depth_curve")
# Venue kinds that are not on-chain pools or laws standing for them: depth quoted off chain (--depth FILE).
OFF_CHAIN_VENUE_KINDS = ("depth_curve",)
POSITION_COLUMNS = ("protocol", "market", "account", "asset", "side", "amount")


def _freeze(value: Any) -> Any:
    """Deep read-only copy of JSON-like data (dicts become MappingProxyType, lists tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of the freezing above, for JSON output."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Asset:
    """A token: `price_usd` is the oracle price the protocols see at the snapshot block.

    `oracle_lag_s` is how far (seconds) the protocols' oracle trails the market (Maker OSM: 3600)."""

    symbol: str
    decimals: int
    price_usd: float
    address: str | None = None
    oracle: str | None = None
    oracle_lag_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.symbol:
            raise InputError("asset: empty symbol")
        if not (math.isfinite(self.price_usd) and self.price_usd > 0):
            raise InputError(f"asset {self.symbol}: price_usd must be a positive finite number, got {self.price_usd}")
        if not (math.isfinite(self.oracle_lag_s) and self.oracle_lag_s >= 0):
            raise InputError(f"asset {self.symbol}: oracle_lag_s must be >= 0, got {self.oracle_lag_s}")


@dataclass(frozen=True)
class MarketParams:
    """One lending market: its protocol (selects the liquidation rule), protocol-level `params` and
    per-asset parameters (`assets[SYMBOL]`), exactly as in markets.json (see docs/snapshot-format.md)."""

    protocol: str
    market: str
    params: Mapping[str, Any] = field(default_factory=dict)
    assets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise InputError(f"market {self.market!r}: unknown protocol {self.protocol!r} (known: {', '.join(PROTOCOLS)})")
        object.__setattr__(self, "params", _freeze(dict(self.params)))
        object.__setattr__(self, "assets", _freeze(dict(self.assets)))

    @property
    def key(self) -> tuple[str, str]:
        return (self.protocol, self.market)


@dataclass(frozen=True)
class Position:
    """One row of positions.csv: an amount (whole tokens) of `asset` on `side` of an account.
    `emode` is the account's Aave e-mode category (0 = none); other protocols ignore it."""

    protocol: str
    market: str
    account: str
    asset: str
    side: str
    amount: float
    emode: int = 0


class Positions:
    """The positions table, long format (one row per account x asset x side), immutable.

    Columns: protocol, market, account, asset, side (str), amount (float64 whole tokens), emode (int64).
    """

    __slots__ = ("_frame",)

    def __init__(self, frame: pd.DataFrame):
        missing = [c for c in POSITION_COLUMNS if c not in frame.columns]
        if missing:
            raise InputError(f"positions: missing column(s) {', '.join(missing)}")
        out = pd.DataFrame({c: frame[c].astype(str).to_numpy() for c in POSITION_COLUMNS[:5]})
        out["amount"] = pd.to_numeric(frame["amount"], errors="raise").astype(np.float64).to_numpy()
        if "emode" in frame.columns:
            out["emode"] = pd.to_numeric(frame["emode"], errors="raise").fillna(0).astype(np.int64).to_numpy()
        else:
            out["emode"] = np.zeros(len(out), dtype=np.int64)
        amounts = out["amount"].to_numpy()
        bad = ~np.isfinite(amounts) | (amounts < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"positions row {i + 1}: amount must be finite and >= 0, got {amounts[i]}")
        sides = out["side"].to_numpy()
        bad_side = ~np.isin(sides, SIDES)
        if bad_side.any():
            i = int(np.flatnonzero(bad_side)[0])
            raise InputError(f"positions row {i + 1}: side must be 'collateral' or 'debt', got {sides[i]!r}")
        object.__setattr__(self, "_frame", out)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Positions is immutable")

    @classmethod
    def from_rows(cls, rows: Iterable[Position]) -> "Positions":
        rows = list(rows)
        cols = {c: [getattr(r, c) for r in rows] for c in (*POSITION_COLUMNS, "emode")}
        return cls(pd.DataFrame(cols, columns=[*POSITION_COLUMNS, "emode"]))

    @property
    def frame(self) -> pd.DataFrame:
        """A copy (callers may modify it freely without touching the snapshot)."""
        return self._frame.copy()

    def column(self, name: str) -> np.ndarray:
        """Read-only view of one column."""
        arr = self._frame[name].to_numpy()
        view = arr.view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return len(self._frame)

    def __iter__(self) -> Iterator[Position]:
        for r in self._frame.itertuples(index=False):
            yield Position(r.protocol, r.market, r.account, r.asset, r.side, float(r.amount), int(r.emode))


@dataclass(frozen=True)
class Venue:
    """Where selling `asset` moves its market price: `kind` plus the kind's parameters (docs/model.md)."""

    asset: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in VENUE_KINDS:
            raise InputError(f"venue for {self.asset}: unknown kind {self.kind!r} (known: {', '.join(VENUE_KINDS)})")
        object.__setattr__(self, "params", _freeze(dict(self.params)))


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Everything the solver needs, pinned at one block (or hand-written)."""

    manifest: Mapping[str, Any]
    assets: Mapping[str, Asset]
    positions: Positions
    markets: tuple[MarketParams, ...]
    venues: Mapping[str, tuple[Venue, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifest", _freeze(dict(self.manifest)))
        object.__setattr__(self, "assets", MappingProxyType(dict(self.assets)))
        object.__setattr__(self, "markets", tuple(self.markets))
        object.__setattr__(self, "venues", MappingProxyType({k: tuple(v) for k, v in self.venues.items()}))
        self._check_references()

    def _check_references(self) -> None:
        keys = {m.key for m in self.markets}
        if len(keys) != len(self.markets):
            raise InputError("markets.json: duplicate (protocol, market) entry")
        for m in self.markets:
            for sym in m.assets:
                if sym not in self.assets:
                    raise InputError(f"markets.json: market {m.protocol}/{m.market} names asset {sym!r} not in assets.csv")
        for sym in self.venues:
            if sym not in self.assets:
                raise InputError(f"venues.json: venue for asset {sym!r} not in assets.csv")
        if len(self.positions) == 0:
            return
        f = self.positions._frame
        unknown_assets = set(pd.unique(f["asset"])) - set(self.assets)
        if unknown_assets:
            sym = sorted(unknown_assets)[0]
            row = int(np.flatnonzero(f["asset"].to_numpy() == sym)[0]) + 1
            raise InputError(f"positions row {row}: asset {sym!r} not in assets.csv")
        pairs = f[["protocol", "market"]].drop_duplicates()
        for p, mk in pairs.itertuples(index=False):
            if p not in PROTOCOLS:
                row = int(np.flatnonzero(f["protocol"].to_numpy() == p)[0]) + 1
                raise InputError(f"positions row {row}: unknown protocol {p!r} (known: {', '.join(PROTOCOLS)})")
            if (p, mk) not in keys:
                row = int(np.flatnonzero((f["protocol"].to_numpy() == p) & (f["market"].to_numpy() == mk))[0]) + 1
                raise InputError(f"positions row {row}: market {p}/{mk} not in markets.json")

    def market(self, protocol: str, market: str) -> MarketParams:
        for m in self.markets:
            if m.key == (protocol, market):
                return m
        raise InputError(f"no market {protocol}/{market} in snapshot")

    @property
    def symbols(self) -> tuple[str, ...]:
        """Asset symbols in the canonical (alphabetical) order the solver uses everywhere."""
        return tuple(sorted(self.assets))

    def prices(self) -> dict[str, float]:
        return {s: a.price_usd for s, a in self.assets.items()}

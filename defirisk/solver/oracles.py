"""Protocol oracles as formulas of market prices (docs/model.md, "Protocol oracles").

A protocol does not see the market: it sees its oracle. Per market and asset, markets.json may say how
that oracle is made (`assets.SYMBOL.oracle`; absent = the asset's own market price, as before):

- market: the asset's USD market price (a Chainlink-style aggregate of the asset itself);
- ratio:  rate x the USD market price of asset `of` (Aave's CAPO adapters: exchange rate x base feed;
          Morpho exchange-rate oracles); `cap` is the adapter's ratio cap: the rate used is min(rate, cap);
- fixed:  a USD price that does not move (pegged-stable adapters, fixed-price feeds).

Any kind may add `deviation` (fraction) and `heartbeat_s`: in sequential mode the answer moves only when
its formula has left the last answer by more than `deviation`, or `heartbeat_s` has passed since the
answer was written (`age_s`: its age at the snapshot). Oracle lags (`oracle_lag_s`, Maker's OSM) act on
the market prices a formula reads, before the formula.

The market price vector in, the book's oracle vector out: rules keep taking one price vector, so a
protocol's knowledge stays in its rule and the oracle's in this module. Pure numpy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from defirisk.errors import InputError
from defirisk.model import MarketParams

KINDS = ("market", "ratio", "fixed")
_FIELDS = {"kind", "of", "rate", "cap", "price", "deviation", "heartbeat_s", "age_s", "source", "type"}
_MARKET, _RATIO, _FIXED = 0, 1, 2


@dataclass(frozen=True)
class OracleSpec:
    """One asset's oracle in one market (validated)."""

    kind: str
    of: int = -1               # ratio: index of the base asset
    rate: float = 1.0          # ratio: effective rate (min(rate, cap))
    price: float = math.nan    # fixed: USD
    deviation: float = 0.0     # 0 = the answer follows its formula at once
    heartbeat_s: float = math.inf
    age_s: float = 0.0

    def describe(self, symbols) -> str:
        if self.kind == "ratio":
            text = f"{self.rate:.6g} x {symbols[self.of]} market price"
        elif self.kind == "fixed":
            text = f"fixed ${self.price:,.6g}"
        else:
            text = "market price"
        if self.deviation > 0:
            text += f", moves past {self.deviation:.2%} deviation"
        if math.isfinite(self.heartbeat_s):
            text += f" or every {self.heartbeat_s:,.0f} s"
        return text


def _number(raw: Any, where: str, field: str, *, lo: float, hi: float = math.inf, lo_open: bool = False) -> float:
    if isinstance(raw, bool):
        raise InputError(f"{where}, field oracle.{field}: not a number: {raw!r}")
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise InputError(f"{where}, field oracle.{field}: not a number: {raw!r}") from None
    if not math.isfinite(v) or v < lo or (lo_open and v == lo) or v >= hi:
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        if math.isfinite(hi):
            bound += f" and < {hi:g}"
        raise InputError(f"{where}, field oracle.{field}: must be {bound}, got {raw!r}")
    return v


def parse_spec(raw: Any, market: MarketParams, symbol: str, symbols: tuple[str, ...]) -> OracleSpec:
    """The `oracle` object of `symbol` in `market`, checked; errors name the market, asset and field."""
    where = f"markets.json: market {market.protocol}/{market.market}, asset {symbol}"
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}, field oracle: expected an object with a 'kind', got {raw!r}")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise InputError(f"{where}, field oracle.{unknown[0]}: unknown field (known: {', '.join(sorted(_FIELDS))})")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InputError(f"{where}, field oracle.kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    common = dict(
        deviation=_number(raw["deviation"], where, "deviation", lo=0.0, hi=1.0) if "deviation" in raw else 0.0,
        heartbeat_s=_number(raw["heartbeat_s"], where, "heartbeat_s", lo=0.0, lo_open=True) if "heartbeat_s" in raw else math.inf,
        age_s=_number(raw["age_s"], where, "age_s", lo=0.0) if "age_s" in raw else 0.0)
    if kind == "ratio":
        of = raw.get("of")
        if of is None:
            raise InputError(f"{where}, field oracle.of: a ratio oracle needs the asset it multiplies")
        if of not in symbols:
            raise InputError(f"{where}, field oracle.of: unknown asset {of!r} (not in assets.csv)")
        if of == symbol:
            raise InputError(f"{where}, field oracle.of: a ratio oracle cannot be priced in its own asset")
        if "rate" not in raw:
            raise InputError(f"{where}, field oracle.rate: missing")
        rate = _number(raw["rate"], where, "rate", lo=0.0, lo_open=True)
        if "cap" in raw:
            rate = min(rate, _number(raw["cap"], where, "cap", lo=0.0, lo_open=True))
        return OracleSpec("ratio", of=symbols.index(of), rate=rate, **common)
    if kind == "fixed":
        if "price" not in raw:
            raise InputError(f"{where}, field oracle.price: missing")
        return OracleSpec("fixed", price=_number(raw["price"], where, "price", lo=0.0, lo_open=True), **common)
    return OracleSpec("market", **common)


class BookOracle:
    """How one market's protocol prices every asset from market prices.

    `formula(m)`: the answers the formulas give at market prices m (columns = the snapshot's symbols;
    m may be (..., k)). `identity` is True when every asset follows its own market price at once (no
    spec, or `market` without deviation or heartbeat): then the oracle IS the market vector and the
    solver takes the same path as without oracles, bit for bit."""

    def __init__(self, market: MarketParams, symbols: tuple[str, ...]):
        self.symbols = symbols
        specs: dict[int, OracleSpec] = {}
        for sym, fields in market.assets.items():
            if isinstance(fields, Mapping) and "oracle" in fields:
                specs[symbols.index(sym)] = parse_spec(fields["oracle"], market, sym, symbols)
        self.specs = specs
        self.identity = all(s.kind == "market" and s.deviation == 0 and not math.isfinite(s.heartbeat_s)
                            for s in specs.values())
        k = len(symbols)
        self._ratio = [(j, s.of, s.rate) for j, s in specs.items() if s.kind == "ratio"]
        self._fixed = [(j, s.price) for j, s in specs.items() if s.kind == "fixed"]
        self.deviation = np.zeros(k)
        self.heartbeat = np.full(k, np.inf)
        self.age = np.zeros(k)
        for j, s in specs.items():
            self.deviation[j], self.heartbeat[j], self.age[j] = s.deviation, s.heartbeat_s, s.age_s
        self.gated = bool((self.deviation > 0).any() or np.isfinite(self.heartbeat).any())

    def formula(self, m: np.ndarray) -> np.ndarray:
        if self.identity:
            return m
        m = np.asarray(m, dtype=float)
        out = m.copy()
        for j, of, rate in self._ratio:
            out[..., j] = rate * m[..., of]
        for j, price in self._fixed:
            out[..., j] = price
        return out

    def moves_with(self, j: int) -> np.ndarray:
        """Assets whose answer moves when asset j's market price moves (j itself unless its answer is
        a ratio or fixed; every ratio asset priced in j)."""
        out = np.zeros(len(self.symbols), dtype=bool)
        spec = self.specs.get(j)
        out[j] = spec is None or spec.kind == "market"
        for a, of, _ in self._ratio:
            if of == j:
                out[a] = True
        return out

    def descent(self, m: np.ndarray, a0: np.ndarray) -> np.ndarray:
        """The answers equilibrium mode uses at market prices m: the formula, except that an answer
        stays at its snapshot value a0 while the formula is within its deviation of it (a move smaller
        than the threshold never updates the feed); past it the answer follows the formula (later steps
        of at most `deviation` are below the descent's band). Heartbeats need time: not modelled here."""
        f = self.formula(m)
        if not self.gated:
            return f
        stay = np.abs(f - a0) <= self.deviation * a0
        return np.where(stay, a0, f)

    def describe(self) -> dict[str, str]:
        return {self.symbols[j]: s.describe(self.symbols) for j, s in sorted(self.specs.items())}


class OracleTrack:
    """The answers one market's oracle gives round after round in sequential mode (deviation and
    heartbeat). Time t (seconds) counts from the shock; an answer written at time u is refreshed to its
    formula at the first evaluation with t - u >= heartbeat_s, or earlier when the formula has moved
    more than `deviation` from it."""

    def __init__(self, oracle: BookOracle, p0: np.ndarray):
        self.oracle = oracle
        self.answer = np.asarray(oracle.formula(np.asarray(p0, dtype=float)), dtype=float).copy()
        self.updated = -oracle.age.copy()  # time each answer was written

    def peek(self, m: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(answers at time t given market prices m, mask of answers that update) without committing."""
        f = self.oracle.formula(m)
        if not self.oracle.gated:
            return f, f != self.answer
        dev = np.abs(f - self.answer) > self.oracle.deviation * self.answer
        beat = t - self.updated >= self.oracle.heartbeat
        upd = dev | beat
        return np.where(upd, f, self.answer), upd

    def update(self, m: np.ndarray, t: float) -> np.ndarray:
        """Commit the answers at time t (an answer that updates is written at t)."""
        ans, upd = self.peek(m, t)
        if self.oracle.gated:
            self.updated = np.where(upd, t, self.updated)
        self.answer = np.asarray(ans, dtype=float).copy()
        return self.answer

    def next_heartbeat(self, m: np.ndarray) -> float:
        """Earliest time at which a heartbeat would change an answer (inf if none would)."""
        if not self.oracle.gated:
            return math.inf
        f = self.oracle.formula(m)
        differs = f != self.answer
        due = self.updated + self.oracle.heartbeat
        due = due[differs & np.isfinite(due)]
        return float(due.min()) if len(due) else math.inf

"""Alert rules: a small grammar, parsed before any work starts and evaluated on the finished report.

Grammar (whitespace ignored, names case-insensitive, asset symbols as in assets.csv)::

    rule      := cliff | at | now
    cliff     := "cliff_within" [ "@" ASSET ] ( "=" | "<=" ) SHOCK
    at        := ( "bad_debt_at" | "liquidated_at" ) "[" SHOCK [ "," MODE ] "]" [ "@" ASSET ] OP USD
    now       := ( "liquidatable_now" | "liquidatable_now_usd" ) OP NUMBER
    OP        := ">" | ">=" | "<" | "<="
    SHOCK     := a fraction in (0, 1) ("0.15") or a percentage ("15%")
    MODE      := "sequential" | "equilibrium"       (omitted: the worse of the two)
    NUMBER    := a decimal or scientific number, "_" allowed as a digit separator ("1e6", "2_500_000")

Meaning:

* `cliff_within=0.15` fires when a cascade cliff starts at an initial shock of 15% or less (on any
  volatile asset, or on ASSET).
* `bad_debt_at[0.2]>1e6` fires when bad debt (USD) after a 20% shock exceeds 1e6. Without `@ASSET`
  the shock hits every volatile asset at once (the market-wide scenario); with it, that asset alone.
  `liquidated_at[...]` is the same for liquidated collateral (USD).
* `liquidatable_now>0` compares the number of positions liquidatable at snapshot prices;
  `liquidatable_now_usd` compares their debt in USD.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from defirisk.errors import InputError

MODES = ("sequential", "equilibrium")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}
_NUM = r"[+-]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?"
_SHOCK = rf"{_NUM}%?"
_ASSET = r"[A-Za-z0-9][A-Za-z0-9._\-]*"
_CLIFF_RE = re.compile(rf"^cliff_within(?:@(?P<asset>{_ASSET}))?(?P<op><=|=)(?P<shock>{_SHOCK})$", re.I)
_AT_RE = re.compile(
    rf"^(?P<metric>bad_debt_at|liquidated_at)\[(?P<shock>{_SHOCK})(?:,(?P<mode>[a-z]+))?\]"
    rf"(?:@(?P<asset>{_ASSET}))?(?P<op>>=|<=|>|<)(?P<value>{_NUM})$", re.I)
_NOW_RE = re.compile(rf"^(?P<metric>liquidatable_now_usd|liquidatable_now)(?P<op>>=|<=|>|<)(?P<value>{_NUM})$", re.I)


@dataclass(frozen=True)
class Rule:
    """One parsed alert rule. `text` is what the user wrote, used in every message about it."""

    text: str
    metric: str            # cliff_within | bad_debt_at | liquidated_at | liquidatable_now | liquidatable_now_usd
    op: str                # one of > >= < <= (cliff_within is stored as <=)
    threshold: float
    shock: float | None = None   # fraction, for cliff_within and the *_at metrics
    mode: str | None = None      # None = worse of both modes
    asset: str | None = None     # None = any asset (cliffs) / market-wide scenario (*_at)


@dataclass(frozen=True)
class AlertResult:
    rule: Rule
    fired: bool
    value: float | None    # the measured figure the rule compared (None: nothing to measure)
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule.text, "fired": self.fired,
                "value": _json_float(self.value), "message": self.message}


def _json_float(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _number(text: str, rule: str, what: str) -> float:
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise InputError(f"alert rule {rule!r}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"alert rule {rule!r}: {what} must be finite")
    return value


def _shock(text: str, rule: str) -> float:
    value = _number(text.rstrip("%"), rule, "shock")
    if text.endswith("%"):
        value /= 100.0
    if not 0.0 < value < 1.0:
        raise InputError(f"alert rule {rule!r}: shock {text!r} must be in (0, 1) or (0%, 100%)")
    return value


def parse_rule(text: str) -> Rule:
    """Parse one rule; raise InputError naming the rule and what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"alert rule {text!r}: empty rule")
    src = text.strip()
    compact = re.sub(r"\s+", "", src)
    m = _CLIFF_RE.match(compact)
    if m:
        return Rule(src, "cliff_within", "<=", _shock(m["shock"], src), shock=_shock(m["shock"], src),
                    asset=m["asset"])
    m = _AT_RE.match(compact)
    if m:
        mode = m["mode"].lower() if m["mode"] else None
        if mode is not None and mode not in MODES:
            raise InputError(f"alert rule {src!r}: mode {m['mode']!r} is not one of {', '.join(MODES)}")
        return Rule(src, m["metric"].lower(), m["op"], _number(m["value"], src, "threshold"),
                    shock=_shock(m["shock"], src), mode=mode, asset=m["asset"])
    m = _NOW_RE.match(compact)
    if m:
        return Rule(src, m["metric"].lower(), m["op"], _number(m["value"], src, "threshold"))
    head = re.match(r"^[A-Za-z_]+", compact)
    known = ("cliff_within", "bad_debt_at", "liquidated_at", "liquidatable_now", "liquidatable_now_usd")
    if head is None or head.group(0).lower() not in known:
        raise InputError(f"alert rule {src!r}: unknown metric; expected one of {', '.join(known)} "
                         "(e.g. cliff_within=0.15, bad_debt_at[0.2]>1e6, liquidatable_now>0)")
    raise InputError(f"alert rule {src!r}: malformed; examples: cliff_within=0.15, "
                     "cliff_within@WETH=15%, bad_debt_at[0.2]>1e6, liquidated_at[30%,sequential]@WBTC>=5e5, "
                     "liquidatable_now_usd>100000")


def parse_rules(texts: Iterable[str]) -> tuple[Rule, ...]:
    return tuple(parse_rule(t) for t in texts)


def required_shocks(rules: Sequence[Rule]) -> set[float]:
    """Scenario shocks the report must compute so that every *_at rule has its figure."""
    return {r.shock for r in rules if r.metric in ("bad_debt_at", "liquidated_at") and r.shock is not None}


def check_assets(rules: Sequence[Rule], volatile_assets: Sequence[str]) -> None:
    """Raise InputError for a rule naming an asset the report has no curve or scenario for."""
    for r in rules:
        if r.metric in ("bad_debt_at", "liquidated_at") and not volatile_assets:
            raise InputError(f"alert rule {r.text!r}: this snapshot has no volatile asset (no venue in "
                             "venues.json), so there is nothing to shock")
        if r.asset is not None and r.asset not in volatile_assets:
            raise InputError(f"alert rule {r.text!r}: asset {r.asset!r} is not a volatile asset of this "
                             f"snapshot (volatile: {', '.join(volatile_assets) or 'none'})")


def _scenario_value(report: Mapping[str, Any], rule: Rule) -> float | None:
    field = "bad_debt_usd" if rule.metric == "bad_debt_at" else "liquidated_collateral_usd"
    rows = (report["assets"][rule.asset]["scenarios"] if rule.asset
            else report["market_wide"]["scenarios"])
    values = [row[field] for row in rows
              if math.isclose(row["shock"], rule.shock, abs_tol=1e-12)
              and (rule.mode is None or row["mode"] == rule.mode)]
    return max(values) if values else None


def evaluate(rules: Sequence[Rule], report: Mapping[str, Any]) -> list[AlertResult]:
    """Evaluate rules against a report dict (the JSON object of `render_json`). Pure."""
    results = []
    for rule in rules:
        if rule.metric == "cliff_within":
            assets = [rule.asset] if rule.asset else list(report["assets"])
            shocks = [c["trigger_shock"] for a in assets for c in report["assets"][a]["cliffs"]]
            value = min(shocks) if shocks else None
            fired = value is not None and value <= rule.threshold + 1e-12
            where = f" on {rule.asset}" if rule.asset else ""
            msg = (f"nearest cliff{where} at a {value:.1%} shock (limit {rule.threshold:.1%})"
                   if value is not None else f"no cliff{where} up to the largest shock computed")
        elif rule.metric in ("bad_debt_at", "liquidated_at"):
            value = _scenario_value(report, rule)
            if value is None:
                raise InputError(f"alert rule {rule.text!r}: the report has no scenario at shock {rule.shock}")
            fired = _OPS[rule.op](value, rule.threshold)
            label = "bad debt" if rule.metric == "bad_debt_at" else "liquidated collateral"
            scope = f"{rule.asset} alone" if rule.asset else "all volatile assets"
            mode = rule.mode or "worse of both modes"
            msg = (f"{label} at a {rule.shock:.0%} shock ({scope}, {mode}) is ${value:,.0f}; "
                   f"rule: {rule.op} ${rule.threshold:,.0f}")
        else:
            now = report["liquidatable_now"]
            value = float(now["count"] if rule.metric == "liquidatable_now" else now["debt_usd"])
            fired = _OPS[rule.op](value, rule.threshold)
            msg = f"{rule.metric} is {value:,.0f}; rule: {rule.op} {rule.threshold:,.0f}"
        results.append(AlertResult(rule, bool(fired), value, msg))
    return results

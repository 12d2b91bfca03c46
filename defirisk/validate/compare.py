"""Predicted (solver, sequential mode) versus executed (the fork): what must agree and how closely.

Checks, each reported row by row:
- prices: the shocked price and the end price of every asset, relative difference <= price_rtol;
- accounts: the set of liquidated (protocol, market, account) must be identical, and so must each
  account's liquidation rounds (the sequential model claims which block each call happens in);
- amounts per protocol: liquidated collateral USD, debt repaid USD, bad debt USD, each within
  amount_rtol relative or amount_atol_usd absolute (whichever is larger);
- rounds: the number of rounds with liquidations.
Tolerances and why they are what they are: docs/validation.md ("where the model cannot match").
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from defirisk.solver.result import CascadeResult, Totals
from defirisk.validate.executor import Execution

PRICE_RTOL = 1e-6
AMOUNT_RTOL = 1e-6
AMOUNT_ATOL_USD = 0.01
AMOUNT_FIELDS = ("liquidated_collateral_usd", "debt_repaid_usd", "bad_debt_usd")


@dataclass(frozen=True)
class Tolerances:
    price_rtol: float = PRICE_RTOL
    amount_rtol: float = AMOUNT_RTOL
    amount_atol_usd: float = AMOUNT_ATOL_USD


@dataclass(frozen=True, eq=False)
class Comparison:
    agree: bool
    prices: pd.DataFrame  # asset, what (shocked|end), predicted, executed, rel_diff, ok
    amounts: pd.DataFrame  # protocol, metric, predicted, executed, abs_diff, ok
    only_predicted: tuple[tuple[str, str, str], ...]
    only_executed: tuple[tuple[str, str, str], ...]
    round_mismatches: tuple[tuple[str, str, str, tuple[int, ...], tuple[int, ...]], ...]
    rounds: tuple[int, int]  # (predicted, executed)
    tolerances: Tolerances = field(default_factory=Tolerances)

    @property
    def accounts_agree(self) -> bool:
        return not self.only_predicted and not self.only_executed and not self.round_mismatches

    def problems(self) -> list[str]:
        out = []
        for r in self.prices.itertuples(index=False):
            if not r.ok:
                out.append(f"{r.what} price of {r.asset}: predicted {r.predicted:.10g}, executed {r.executed:.10g} "
                           f"(relative difference {r.rel_diff:.3g} > {self.tolerances.price_rtol:g})")
        for key in self.only_predicted:
            out.append(f"liquidated only in the prediction: {'/'.join(key)}")
        for key in self.only_executed:
            out.append(f"liquidated only on the fork: {'/'.join(key)}")
        for p, m, a, rp, re in self.round_mismatches:
            out.append(f"{p}/{m}/{a}: liquidated in rounds {list(rp)} predicted, {list(re)} on the fork")
        for r in self.amounts.itertuples(index=False):
            if not r.ok:
                out.append(f"{r.protocol} {r.metric}: predicted {r.predicted:.6f}, executed {r.executed:.6f}")
        if self.rounds[0] != self.rounds[1]:
            out.append(f"rounds with liquidations: predicted {self.rounds[0]}, executed {self.rounds[1]}")
        return out

    def to_dict(self) -> dict:
        from defirisk.solver.result import frame_records

        return {"agree": self.agree, "accounts_agree": self.accounts_agree,
                "tolerances": {"price_rtol": self.tolerances.price_rtol, "amount_rtol": self.tolerances.amount_rtol,
                               "amount_atol_usd": self.tolerances.amount_atol_usd},
                "rounds": {"predicted": self.rounds[0], "executed": self.rounds[1]},
                "prices": frame_records(self.prices), "amounts": frame_records(self.amounts),
                "only_predicted": ["/".join(k) for k in self.only_predicted],
                "only_executed": ["/".join(k) for k in self.only_executed],
                "round_mismatches": [{"account": "/".join((p, m, a)), "predicted": list(rp), "executed": list(re)}
                                     for p, m, a, rp, re in self.round_mismatches],
                "problems": self.problems()}


def _rel(a: float, b: float) -> float:
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def _rounds_by_account(liq: pd.DataFrame) -> dict[tuple[str, str, str], tuple[int, ...]]:
    out: dict[tuple[str, str, str], list[int]] = {}
    for r in liq[["protocol", "market", "account", "round"]].itertuples(index=False):
        out.setdefault((r.protocol, r.market, r.account.lower()), []).append(int(r.round))
    return {k: tuple(sorted(set(v))) for k, v in out.items()}


def compare(predicted: CascadeResult, executed: Execution, tolerances: Tolerances | None = None) -> Comparison:
    tol = tolerances or Tolerances()
    price_rows = []
    for what, pp, ep in (("shocked", predicted.shocked_prices, executed.shocked_prices),
                         ("end", predicted.end_prices, executed.end_prices)):
        for asset in sorted(set(pp) | set(ep)):
            a, b = float(pp.get(asset, float("nan"))), float(ep.get(asset, float("nan")))
            d = _rel(a, b)
            price_rows.append({"asset": asset, "what": what, "predicted": a, "executed": b, "rel_diff": d,
                               "ok": bool(d <= tol.price_rtol)})
    prices = pd.DataFrame(price_rows, columns=["asset", "what", "predicted", "executed", "rel_diff", "ok"])

    rp, re = _rounds_by_account(predicted.liquidations), _rounds_by_account(executed.liquidations)
    only_p = tuple(sorted(set(rp) - set(re)))
    only_e = tuple(sorted(set(re) - set(rp)))
    mism = tuple((k[0], k[1], k[2], rp[k], re[k]) for k in sorted(set(rp) & set(re)) if rp[k] != re[k])

    amount_rows = []
    protocols = sorted(set(predicted.by_protocol) | set(executed.by_protocol))
    for proto in protocols + ["all"]:
        tp = predicted.totals if proto == "all" else predicted.by_protocol.get(proto, Totals())
        te = executed.totals if proto == "all" else executed.by_protocol.get(proto, Totals())
        for metric in AMOUNT_FIELDS:
            a, b = float(getattr(tp, metric)), float(getattr(te, metric))
            allowed = max(tol.amount_atol_usd, tol.amount_rtol * max(abs(a), abs(b)))
            amount_rows.append({"protocol": proto, "metric": metric, "predicted": a, "executed": b,
                                "abs_diff": abs(a - b), "ok": bool(abs(a - b) <= allowed)})
    amounts = pd.DataFrame(amount_rows, columns=["protocol", "metric", "predicted", "executed", "abs_diff", "ok"])
    rounds = (int(predicted.rounds), int(executed.rounds))
    agree = bool(prices["ok"].all() and amounts["ok"].all() and not only_p and not only_e and not mism
                 and rounds[0] == rounds[1])
    return Comparison(agree, prices, amounts, only_p, only_e, mism, rounds, tol)

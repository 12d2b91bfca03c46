"""Text rendering of a ValidationReport: predicted and executed side by side (pure; no I/O)."""
from __future__ import annotations

from defirisk.validate.run import ValidationReport


def _table(headers: list[str], rows: list[list[str]]) -> str:
    cells = [headers] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_text(report: ValidationReport) -> str:
    cmp = report.comparison
    tol = cmp.tolerances
    shocks = ", ".join(f"{a}={s:g}" for a, s in report.shocks.items())
    out = [f"validation of {shocks} on a fork of {report.upstream} (chain {report.chain_id}) at block {report.block}",
           f"oracles: {report.oracle_mode}, funding: {report.funding_mode}; "
           f"{report.executed.transactions} transactions on the fork in {report.seconds.get('total', 0):.1f} s",
           ""]
    moved = [r for r in cmp.prices.itertuples(index=False)
             if r.what == "end" and (r.predicted != report.predicted.initial_prices.get(r.asset) or not r.ok)]
    out.append(_table(["asset", "predicted end", "executed end", "rel diff", "ok"],
                      [[r.asset, f"{r.predicted:,.6f}", f"{r.executed:,.6f}", f"{r.rel_diff:.2e}", "yes" if r.ok else "NO"]
                       for r in moved] or [["(no price moved)", "", "", "", ""]]))
    out.append("")
    out.append(_table(["protocol", "metric", "predicted", "executed", "abs diff", "ok"],
                      [[r.protocol, r.metric, f"{r.predicted:,.2f}", f"{r.executed:,.2f}", f"{r.abs_diff:.2e}",
                        "yes" if r.ok else "NO"] for r in cmp.amounts.itertuples(index=False)]))
    n_pred = report.predicted.totals.accounts_liquidated
    n_exec = report.executed.totals.accounts_liquidated
    out.append("")
    out.append(f"liquidated accounts: predicted {n_pred}, executed {n_exec}; "
               f"rounds: predicted {cmp.rounds[0]}, executed {cmp.rounds[1]}; "
               f"same accounts in the same rounds: {'yes' if cmp.accounts_agree else 'NO'}")
    out.append(f"tolerances: prices {tol.price_rtol:g} relative; amounts {tol.amount_rtol:g} relative or "
               f"${tol.amount_atol_usd:g}")
    out.append("")
    if cmp.agree:
        out.append("AGREE: the fork executed what the model predicted")
    else:
        out.append("DISAGREE:")
        out.extend(f"  - {p}" for p in cmp.problems())
    return "\n".join(out)

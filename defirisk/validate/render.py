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
    if report.predicted_with_depth is not None:
        out += ["", _depth_text(report)]
    return "\n".join(out)


def _depth_text(report: ValidationReport) -> str:
    """The prediction with off-chain depth beside the on-chain prediction; never compared with the fork."""
    d, on, both = report.off_chain_depth or {}, report.predicted, report.predicted_with_depth
    lines = [f"prediction with off-chain depth from {d.get('file', '?')} (assets: {', '.join(d.get('assets', {}))}); "
             "NOT executed and NOT compared: the fork can sell only into on-chain pools, so the verdict above is "
             "for the on-chain prediction"]
    rows = [[a, f"{on.end_prices[a]:,.6f}", f"{both.end_prices[a]:,.6f}"] for a in sorted(both.end_prices)
            if on.end_prices.get(a) != on.initial_prices.get(a) or both.end_prices[a] != both.initial_prices.get(a)]
    lines.append(_table(["asset", "predicted end (on-chain)", "predicted end (with off-chain depth)"],
                        rows or [["(no price moved)", "", ""]]))
    t0, t1 = on.totals, both.totals
    lines.append(_table(["total", "on-chain", "with off-chain depth"],
                        [["accounts liquidated", str(t0.accounts_liquidated), str(t1.accounts_liquidated)],
                         ["liquidated collateral USD", f"{t0.liquidated_collateral_usd:,.2f}", f"{t1.liquidated_collateral_usd:,.2f}"],
                         ["bad debt USD", f"{t0.bad_debt_usd:,.2f}", f"{t1.bad_debt_usd:,.2f}"]]))
    return "\n".join(lines)

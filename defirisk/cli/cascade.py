"""`defirisk cascade`: solve a cascade or a cascade curve on a snapshot directory (thin wrapper)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from defirisk.cli import app
from defirisk.cli.options import gas_usd_option, min_profit_usd_option, parse_assignments, recovery_option
from defirisk.errors import ConvergenceError, InputError


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [[h for h in headers]] + [[f"{v:,.2f}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _depth_line(d: dict) -> str:
    per = "; ".join(f"{a} {c['points']} points up to ${c['max_usd_sold']:,.0f} ({c['max_impact']:.2%} impact)"
                    for a, c in d["assets"].items())
    return f"off-chain depth from {d['file']}, routed with the on-chain pools: {per}"


@app.command("cascade")
def cascade(
    snapshot_dir: Path = typer.Argument(..., help="Snapshot directory (format v1)."),
    shock: List[str] = typer.Option([], "--shock", help="ASSET=FRACTION price shock, repeatable (WETH=0.2 = -20%)."),
    beta: List[str] = typer.Option([], "--beta", help="ASSET=BETA: move ASSET by BETA x the (single) shock."),
    mode: Optional[str] = typer.Option(None, "--mode", help="sequential (one round per block; the default), "
                                       "equilibrium (the limit of short rounds: each liquidation at its trigger price) "
                                       "or fixed-price (every position liquidated at the end prices; pessimistic)."),
    band: Optional[float] = typer.Option(None, "--band", help="Equilibrium mode: a liquidation happens at most this "
                                         "fraction below its trigger (default 0.01; 0 = exact, slow)."),
    curve: bool = typer.Option(False, "--curve", help="Cascade curve of --asset over shocks, with cliffs."),
    asset: Optional[str] = typer.Option(None, "--asset", help="Asset of the curve (with --curve)."),
    max_shock: float = typer.Option(0.9, "--max-shock", help="Largest shock of the curve."),
    points: int = typer.Option(1000, "--points", help="Number of curve points."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    liquidators: str = typer.Option("profitable", "--liquidators", help="profitable (a liquidation happens only "
                                    "when it pays the liquidator: bonus > price impact + gas + minimum profit) or "
                                    "all (every liquidatable position is liquidated). Applies to --curve too (not to fixed-price mode)."),
    gas_usd: Optional[float] = gas_usd_option(),
    min_profit_usd: Optional[float] = min_profit_usd_option(),
    capital_usd: Optional[float] = typer.Option(None, "--capital-usd", help="Capital the liquidators can commit per "
                                                "round, USD (default unlimited; needs --no-flash-loans)."),
    flash_loans: Optional[bool] = typer.Option(None, "--flash-loans/--no-flash-loans", help="Whether liquidators "
                                               "can flash-borrow the debt they repay (default: yes)."),
    depth: Optional[Path] = typer.Option(None, "--depth", help="Off-chain depth, CSV asset,usd_sold,impact (aggregator "
                                         "quotes, order books): routed together with the snapshot's pools (docs/model.md)."),
    recovery: List[str] = recovery_option(),
) -> None:
    """Liquidation cascade after a price shock, or the cascade curve with its cliffs.

    Examples:

      defirisk cascade fixtures/cases/two_protocol_cliff --shock WETH=0.2 --json

      defirisk cascade fixtures/cases/two_protocol_cliff --curve --asset WETH --points 200

      defirisk cascade fixtures/cases/two_protocol_cliff --shock WETH=0.2 --depth quotes.csv
    """
    from defirisk.markets.depth import apply_depth, read_depth
    from defirisk.snapshot import load_snapshot
    from defirisk.solver import cascade_curve, solve
    from defirisk.solver.economics import make_policy

    try:
        policy = make_policy(liquidators, gas_usd=gas_usd, min_profit_usd=min_profit_usd, capital_usd=capital_usd,
                             flash_loans=flash_loans)
        depth_file = read_depth(depth) if depth is not None else None
        snap = apply_depth(load_snapshot(snapshot_dir), depth_file)
        betas = parse_assignments(beta, "--beta") or None
        if curve:
            if not asset:
                raise InputError("--curve needs --asset")
            if shock:
                raise InputError("--curve takes --asset, not --shock")
            res = cascade_curve(snap, asset, max_shock=max_shock, points=points, mode=mode or "sequential", betas=betas,
                                liquidators=policy, band=band,
                                recovery=parse_assignments(recovery, "--recovery", "SECONDS") or None)
            out = res.to_dict()
        else:
            if not shock:
                raise InputError("give at least one --shock ASSET=FRACTION (or --curve --asset ASSET)")
            res = solve(snap, parse_assignments(shock, "--shock", "FRACTION"), mode or "sequential", betas=betas,
                        liquidators=policy, band=band, recovery=parse_assignments(recovery, "--recovery", "SECONDS") or None)
            out = res.to_dict()
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except ConvergenceError as exc:
        typer.echo(f"error: did not converge: {exc}", err=True)
        raise typer.Exit(1)
    if depth_file is not None:
        out["off_chain_depth"] = depth_file.describe()
    if as_json:
        typer.echo(json.dumps(out, indent=None, allow_nan=False))
        return
    if curve:
        if depth_file is not None:
            typer.echo(_depth_line(out["off_chain_depth"]))
        typer.echo(f"cascade curve of {asset} ({out['mode']}, {out['method']}, {len(out['curve'])} points)")
        step = max(1, len(out["curve"]) // 20)
        typer.echo(_table(["shock", "end_price", "liquidated_usd", "bad_debt_usd"],
                          [[f"{r['shock']:.4f}", r["end_price"], r["liquidated_collateral_usd"], r["bad_debt_usd"]]
                           for r in out["curve"][::step]]))
        typer.echo(f"\ncliffs: {len(out['cliffs'])}")
        if out["cliffs"]:
            typer.echo(_table(["trigger_shock", "trigger_price", "end_before", "end_after", "protocols", "liquidated_usd", "bad_debt_usd"],
                              [[f"{c['trigger_shock']:.6f}", c["trigger_price"], c["end_price_before"], c["end_price"],
                                " > ".join(c["protocols"]), c["liquidated_collateral_usd"], c["bad_debt_usd"]] for c in out["cliffs"]]))
        return
    if depth_file is not None:
        typer.echo(_depth_line(out["off_chain_depth"]))
    typer.echo(f"mode {out['mode']}: {out['rounds']} rounds, converged={out['converged']}")
    for key, label in (("oracles", "protocol oracles"), ("recovery_halflife_s", "recovery half-life (s)")):
        val = (out.get("assumptions") or {}).get(key)
        if val:
            typer.echo(f"{label}: {json.dumps(val, sort_keys=True)}")
    typer.echo(_table(["asset", "initial", "shocked", "end"],
                      [[a, out["initial_prices"][a], out["shocked_prices"][a], out["end_prices"][a]] for a in out["end_prices"]]))
    t = out["totals"]
    typer.echo("")
    typer.echo(_table(["protocol", "accounts", "liquidated_usd", "repaid_usd", "bad_debt_usd"],
                      [[p, v["accounts_liquidated"], v["liquidated_collateral_usd"], v["debt_repaid_usd"], v["bad_debt_usd"]]
                       for p, v in out["by_protocol"].items()]
                      + [["TOTAL", t["accounts_liquidated"], t["liquidated_collateral_usd"], t["debt_repaid_usd"], t["bad_debt_usd"]]]))
    nl = out.get("not_liquidated")
    if nl is not None:
        who = (out.get("assumptions") or {}).get("liquidators") or {}
        typer.echo(f"\nliquidators: {who.get('liquidators', liquidators)}")
        typer.echo(f"liquidatable, not liquidated: ${nl['debt_usd']:,.2f} (debt USD, {nl['accounts']} positions), "
                   f"of which underwater ${nl['underwater_debt_usd']:,.2f}")

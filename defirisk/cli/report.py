"""`defirisk report`: the keeper-risk report (thin: parse, call defirisk.report, print)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional

import typer

from defirisk.cli import app
from defirisk.cli.options import gas_usd_option, min_profit_usd_option, parse_assignments, recovery_option
from defirisk.cli.progress import StageProgress
from defirisk.errors import DefiriskError, InputError
from defirisk.redact import scrub

EXIT_OK, EXIT_ALERT, EXIT_ERROR = 0, 1, 2


@app.command("report")
def report_cmd(
    rpc_url: Optional[str] = typer.Option(None, "--rpc-url", help="Report on this chain (latest block). Secrets in the URL are redacted everywhere."),
    snapshot: Optional[Path] = typer.Option(None, "--snapshot", help="Report on a snapshot directory (format v1)."),
    block: Optional[int] = typer.Option(None, "--block", help="With --rpc-url: pin this block instead of the latest."),
    book: Optional[str] = typer.Option(None, "--book", help="With --rpc-url: address book file or built-in name (chains other than mainnet)."),
    out: Path = typer.Option(Path("reports/latest"), "--out", help="Output directory, replaced atomically."),
    formats: str = typer.Option("md,html,json", "--format", help="Comma-separated: md, html, json."),
    history: Optional[Path] = typer.Option(None, "--history", help="SQLite history: record this run, show changes since the last one (default: history.sqlite beside --out)."),
    no_history: bool = typer.Option(False, "--no-history", help="Do not read or write any history."),
    alert: List[str] = typer.Option([], "--alert", help="Alert rule, repeatable, e.g. 'cliff_within=0.15', 'bad_debt_at[0.2]>1e6' (docs/report.md)."),
    lock_wait: float = typer.Option(0.0, "--lock-wait", help="Seconds to wait for another run holding the history lock (default: fail at once)."),
    curve_points: int = typer.Option(60, "--curve-points", help="Grid points on each cascade curve (cliffs are bisected to full precision whatever the grid)."),
    top: int = typer.Option(10, "--top", help="Rows in the account tables."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes for the per-asset work (default: one per CPU; 1 = serial)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing unless an alert fires or an error occurs (for cron)."),
    liquidators: str = typer.Option("profitable", "--liquidators", help="Scenario solves: profitable (a liquidation "
                                    "happens only when it pays the liquidator) or all (every liquidatable position)."),
    gas_usd: Optional[float] = gas_usd_option(),
    min_profit_usd: Optional[float] = min_profit_usd_option(),
    depth: Optional[Path] = typer.Option(None, "--depth", help="Off-chain depth, CSV asset,usd_sold,impact: routed "
                                         "together with the on-chain pools; the report states which depth each asset used."),
    recovery: List[str] = recovery_option(),
) -> None:
    """Write the keeper-risk report: liquidatable now, static liquidation levels, cascade curves with
    cliffs, standard shocks in both modes, history and alerts.

    Exit code: 0 no alert fired, 1 an alert fired, 2 error (bad input, bad rule, chain or lock problem).

    Example:
      defirisk report --snapshot fixtures/cases/two_protocol_cliff --out reports/case \\
          --history reports/history.sqlite --alert 'cliff_within=0.15' --alert 'bad_debt_at[0.2]>1e6'
    """
    from defirisk.markets.depth import apply_depth, read_depth
    from defirisk.report import ReportSettings, RunOptions, parse_formats, parse_rules, resolve_source, run_report

    try:
        # Parse everything the user typed before any slow work: a bad rule costs no chain reads.
        rules = parse_rules(alert)
        fmts = parse_formats(formats)
        depth_file = read_depth(depth) if depth is not None else None
        settings = ReportSettings(curve_points=curve_points, top_accounts=top, workers=workers, liquidators=liquidators,
                                  gas_usd=gas_usd, min_profit_usd=min_profit_usd,
                                  recovery=parse_assignments(recovery, "--recovery", "SECONDS") or None)
        if no_history and history is not None:
            raise InputError("give either --history DB or --no-history, not both")
        if no_history:
            pass
        elif history is None:
            history = out.parent / "history.sqlite"
        with tempfile.TemporaryDirectory(prefix="defirisk-report-src-") as work:
            progress = StageProgress(quiet)
            snap, source, snap_dir = resolve_source(rpc_url=rpc_url, snapshot_dir=snapshot, work_dir=work,
                                                     block=block, book=book, progress=progress)
            result = run_report(apply_depth(snap, depth_file), source, RunOptions(
                out=out, formats=fmts, history=history, rules=rules, settings=settings, lock_wait_s=lock_wait,
                include_snapshot=snap_dir, secrets=(rpc_url,) if rpc_url else (), progress=progress))
    except DefiriskError as exc:
        typer.echo(f"error: {scrub(str(exc), rpc_url)}", err=True)
        raise typer.Exit(EXIT_ERROR)
    except Exception as exc:  # exit 1 means "alert fired"; an unexpected failure must not look like one
        typer.echo(f"error: unexpected {type(exc).__name__}: {scrub(str(exc), rpc_url)}", err=True)
        raise typer.Exit(EXIT_ERROR)

    fired = result.fired
    if not quiet:
        rep = result.report
        typer.echo(f"report written to {result.out_dir} ({', '.join(p.name for p in result.files)})")
        nc = rep["summary"]["nearest_cliff"]
        if nc:
            typer.echo(f"nearest cliff: {nc['asset']} at a {nc['trigger_shock']:.1%} shock "
                       f"(${nc['trigger_price']:,.2f}), carried by {' -> '.join(nc['protocols'])}")
        else:
            typer.echo("nearest cliff: none")
        typer.echo(f"liquidatable now: {rep['liquidatable_now']['count']} positions")
        if result.run_id is not None:
            typer.echo(f"history: run #{result.run_id} recorded in {history}")
    for a in fired:
        typer.echo(f"ALERT {a.rule.text}: {a.message}")
    if not quiet and result.alerts and not fired:
        typer.echo(f"alerts: none of {len(result.alerts)} rules fired")
    raise typer.Exit(EXIT_ALERT if fired else EXIT_OK)

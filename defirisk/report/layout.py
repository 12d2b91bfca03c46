"""The report's document structure, independent of output format.

`document(report)` turns the report dict into a flat list of blocks (headings, paragraphs, tables,
images, view boxes). render_md and render_html only translate blocks, so the Markdown post and the
HTML page always say the same things in the same order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from defirisk.report.plots import plot_name

# One-line explanations of the three views users confuse; shown wherever a view's numbers appear.
# The curve's assumption that most changes how a cliff reads (docs/model.md, non-monotone section).
SINGLE_ASSET_CAVEAT = ("Only {asset} is shocked here. Other assets move only through their own liquidation "
                       "sales: no arbitrage ties correlated assets together (e.g. wstETH and WETH) during the "
                       "cascade, so a cliff carried by a thin venue can look deeper than a pegged market would "
                       "allow. The market-wide table shocks all volatile assets together.")

# Why the two modes shown side by side differ (docs/model.md, "Equilibrium mode").
MODES_TEXT = ("Sequential = block by block as on chain: each 12-second block liquidates every position then "
              "liquidatable and sells all it seized at once, so one block's sale can carry prices past other "
              "positions' triggers and they are liquidated deeper. Equilibrium = the limit of short blocks: "
              "each position is liquidated within {band} of the price where it became liquidatable, so "
              "sales are smaller and spread out; oracle delays (Maker's OSM) are ignored there.")
CURVE_MODE_TEXT = {
    "sequential": "Curve, cliffs and the cliff alerts: sequential mode (block by block, as validated on chain).",
    "equilibrium": "Curve, cliffs and the cliff alerts: equilibrium mode (the limit of short blocks).",
    "fixed-price": ("Curve, cliffs and the cliff alerts: fixed-price mode (every position liquidated at the end "
                    "price: the most pessimistic reading, not a path a market takes)."),
}

VIEW_TEXT = {
    "now": ("Liquidatable now",
            "Positions that can be liquidated at the snapshot's prices, before any shock."),
    "static": ("Liquidation levels (static)",
               "The price of one asset at which each position becomes liquidatable, all other prices held "
               "and no feedback from the liquidations themselves."),
    "cascade": ("Cascade outcome (with feedback)",
                "Where prices end after an initial shock once liquidations sell seized collateral into DEX "
                "depth, move the price further and trigger more liquidations."),
}


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass(frozen=True)
class Para:
    text: str
    cls: str | None = None   # "muted", "alert", "ok"


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: tuple[str, ...] = ()   # "l" or "r" per column; default: first left, rest right
    empty: str = "none"


@dataclass(frozen=True)
class Image:
    name: str     # file name under plots/
    alt: str


@dataclass(frozen=True)
class View:
    """A visibly separate box for one of the three views (see VIEW_TEXT)."""

    kind: str     # now | static | cascade
    title: str
    blocks: tuple[Any, ...] = field(default=())


# ---------------------------------------------------------------------------------------------------
# Formatting (one place, so every format prints the same number the same way)

def usd(x: float | None) -> str:
    if x is None:
        return "–"
    ax = abs(x)
    if ax >= 1e9:
        return f"${x / 1e9:,.2f}B"
    if ax >= 1e6:
        return f"${x / 1e6:,.2f}M"
    if ax >= 1e4:
        return f"${x / 1e3:,.1f}k"
    return f"${x:,.2f}"


def price(x: float | None) -> str:
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"${x:,.2f}"
    return f"${x:,.4g}"


def pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.1%}" if signed else f"{x:.1%}"


def hf(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def short(account: str, n: int = 10) -> str:
    a = str(account)
    return a if len(a) <= n + 4 else f"{a[:n]}…{a[-4:]}"


def _change(row: Mapping[str, Any]) -> str:
    if row["change"] is None:
        return "appeared" if row["previous"] is None else "gone"
    rel = row["relative_change"]
    return f"{row['change']:+,.4g}" + (f" ({rel:+.1%})" if rel is not None else "")


def _fig(key: str, v: float | None) -> str:
    if v is None:
        return "–"
    if key.endswith("_usd"):
        return usd(v)
    if key.endswith(".shock"):
        return pct(v)
    if key.endswith("price_usd"):
        return price(v)
    return f"{v:,.6g}"


# ---------------------------------------------------------------------------------------------------

def _accounts_table(rows: Sequence[Mapping[str, Any]], with_level: bool) -> Table:
    if with_level:
        cols = ("protocol", "market", "account", "liquidation price", "drop to liquidation", "collateral", "debt")
        body = tuple((r["protocol"], r["market"], short(r["account"]), price(r["liquidation_price"]),
                      pct(r["distance"]), usd(r["collateral_usd"]), usd(r["debt_usd"])) for r in rows)
        return Table(cols, body, ("l", "l", "l", "r", "r", "r", "r"))
    cols = ("protocol", "market", "account", "health factor", "collateral", "debt")
    body = tuple((r["protocol"], r["market"], short(r["account"]), hf(r["health_factor"]),
                  usd(r["collateral_usd"]), usd(r["debt_usd"])) for r in rows)
    return Table(cols, body, ("l", "l", "l", "r", "r", "r"))


def _scenario_table(rows: Sequence[Mapping[str, Any]], asset: str | None) -> Table:
    cols = ["shock", "mode"] + (["end price"] if asset else []) + [
        "liquidated collateral", "debt repaid", "bad debt", "accounts", "rounds / iterations", "converged",
        "liquidatable, not liquidated (of which underwater)"]
    body = []
    for r in rows:
        line = [f"-{r['shock']:.0%}", r["mode"]]
        if asset:
            line.append(price(r.get("end_price")))
        line += [usd(r["liquidated_collateral_usd"]), usd(r["debt_repaid_usd"]), usd(r["bad_debt_usd"]),
                 str(r["accounts_liquidated"]),
                 str(r["rounds"]) if r["mode"] == "sequential" else str(r["iterations"]),
                 "yes" if r["converged"] else "NO", _not_liquidated(r)]
        body.append(tuple(line))
    return Table(tuple(cols), tuple(body), ("l", "l") + ("r",) * (len(cols) - 2))


def _not_liquidated(r: Mapping[str, Any]) -> str:
    """Debt of positions liquidatable at the end that no liquidator took (the call did not pay)."""
    debt = r.get("not_liquidated_debt_usd")
    if debt is None:
        return "–"
    return f"{usd(debt)} ({usd(r.get('not_liquidated_underwater_debt_usd'))})"


def _liquidators_text(p: Mapping[str, Any]) -> str:
    if p.get("liquidators") == "all":
        return "Liquidators: all — every liquidatable position is liquidated, whatever it costs the liquidator."
    gas = (f"measured gas per call at {p.get('gas_price_gwei', 0):g} gwei" if p.get("gas_usd") is None
           else f"{usd(p['gas_usd'])} gas per call")
    return ("Liquidators: profitable — a liquidation happens only when selling the seized collateral pays the debt "
            f"repaid, {gas} and a minimum profit of {usd(p.get('min_profit_usd'))}; positions left liquidatable "
            "are in the last column (docs/model.md, \"Liquidator economics\").")


def _cliff_text(asset: str, c: Mapping[str, Any], today: float) -> str:
    chain = " → ".join(c["protocols"]) or "no protocol"
    steps = c.get("steps") or [c["trigger_shock"]]
    stair = (f" (a staircase of {len(steps)} jumps up to a {pct(c.get('end_shock'))} drop)" if len(steps) > 1 else "")
    moved = [a for a in c.get("assets_moved", []) if a["asset"] != asset]
    others = "".join(f"; {a['asset']} {'falls' if (a['end_price'] or 0) < (a['end_price_before'] or 0) else 'moves'} "
                     f"from {price(a['end_price_before'])} to {price(a['end_price'])}" for a in moved)
    # a cliff found on another quantity (another asset's price, the USD figures) need not move this price
    own = "jumps" not in c or any(a["asset"] == asset for a in c.get("assets_moved", []))
    return (f"{asset}: a {pct(c['trigger_shock'])} drop (to {price(c['trigger_price'])} from {price(today)}) "
            f"tips a chain carried by {chain}{stair}; the end price {'jumps' if own else 'goes'} from "
            f"{price(c['end_price_before'])} to {price(c['end_price'])}{others}, liquidating "
            f"{usd(c['liquidated_collateral_usd'])} of collateral with {usd(c['bad_debt_usd'])} bad debt.")


_JUMP_NAMES = {"liquidated_collateral_usd": "liquidated", "bad_debt_usd": "bad debt"}


def _jumps_text(c: Mapping[str, Any]) -> str:
    """What jumped across a cliff, e.g. 'wstETH $3,417 → $222; bad debt $8.27M → $30.8M'."""
    out = []
    for q in c.get("jumps", []):
        if q["quantity"] == "end_price":
            out.append(f"{q['asset']} {price(q['before'])} → {price(q['after'])}")
        else:
            out.append(f"{_JUMP_NAMES.get(q['quantity'], q['quantity'])} {usd(q['before'])} → {usd(q['after'])}")
    return "; ".join(out) or "–"


def document(report: Mapping[str, Any]) -> list[Any]:
    src = report["source"]
    out: list[Any] = [Heading(1, "defirisk keeper-risk report")]
    where = []
    if src.get("chain_id") is not None:
        where.append(f"chain {src['chain_id']}")
    if src.get("block_number") is not None:
        where.append(f"block {src['block_number']:,}")
    where.append(f"data time {src['time_utc']}" if src.get("time_utc") else "data time unknown (hand-written snapshot)")
    out.append(Para(" · ".join(where) + f" · source: {src['kind']} {src['label']}", "muted"))
    out.append(Para(f"Generated {report['generated_at']} by defirisk {report['tool']['version']} "
                    f"(report schema {report['schema']}).", "muted"))

    # Summary and alerts first: what a keeper or a governance reader needs in five seconds.
    out.append(Heading(2, "Summary", "summary"))
    s = report["summary"]
    now = report["liquidatable_now"]
    vol = ", ".join(f"{a} {price(s['prices_usd'][a])}" for a in s["volatile_assets"]) or "none"
    items = [f"Volatile assets: {vol}",
             f"Positions: {s['accounts']:,}; collateral {usd(s['total_collateral_usd'])}; debt {usd(s['total_debt_usd'])}",
             f"Liquidatable now: {now['count']:,} positions, {usd(now['debt_usd'])} of debt"]
    nc = s["nearest_cliff"]
    if nc is not None:
        items.append("Nearest cliff: " + _cliff_text(nc["asset"], nc, report["assets"][nc["asset"]]["price_usd"])
                     + " " + _basis_text(report))
    else:
        items.append(f"Nearest cliff: none up to a {pct(report['settings']['max_shock'])} shock")
    items.append(_market_model_text(s.get("market_model") or {}))
    skipped = s.get("skipped_markets") or []
    if skipped:
        names = "; ".join(f"{m.get('protocol')} {m.get('market') or m.get('id')} ({m.get('reason')})" for m in skipped)
        items.append(f"NOT COUNTED: {len(skipped)} market(s) could not be read and are absent from every "
                     f"figure below: {names}")
    out.append(Bullets(tuple(items)))
    alerts = report.get("alerts", [])
    fired = [a for a in alerts if a["fired"]]
    if alerts:
        out.append(Heading(3, "Alerts", "alerts"))
        out.append(Para(f"{len(fired)} of {len(alerts)} alert rules fired.", "alert" if fired else "ok"))
        out.append(Table(("rule", "status", "detail"),
                         tuple((a["rule"], "FIRED" if a["fired"] else "ok", a["message"]) for a in alerts),
                         ("l", "l", "l")))

    out.append(Heading(2, "What changed since the previous run", "changes"))
    ch = report["changes"]
    if ch["previous_run"] is None:
        out.append(Para("No previous run in the history for this source (or no --history given).", "muted"))
    else:
        pr = ch["previous_run"]
        blk = f"block {pr['block_number']:,}" if pr.get("block_number") is not None else "no block"
        out.append(Para(f"Compared with run #{pr['run_id']} generated {pr['generated_at']} ({blk})."))
        changed = [r for r in ch["figures"] if r["changed"]]
        out.append(Table(("figure", "previous", "now", "change"),
                         tuple((r["key"], _fig(r["key"], r["previous"]), _fig(r["key"], r["current"]), _change(r))
                               for r in changed),
                         ("l", "r", "r", "r"), empty="no key figure changed"))
        for label, key in (("New cliffs", "cliffs_added"), ("Cliffs gone", "cliffs_removed")):
            if ch[key]:
                out.append(Bullets(tuple(f"{label}: {c['asset']} at {pct(c['trigger_shock'])} "
                                         f"({' → '.join(c['protocols'])})" for c in ch[key])))

    out.append(Heading(2, "Three views — read them apart", "views"))
    out.append(Bullets(tuple(f"{t}: {d}" for t, d in VIEW_TEXT.values())))

    out.append(View("now", VIEW_TEXT["now"][0], (
        Para(VIEW_TEXT["now"][1], "muted"),
        Para(f"{now['count']:,} positions, {usd(now['collateral_usd'])} collateral, {usd(now['debt_usd'])} debt. "
             f"Largest {len(now['top'])} by debt:"),
        _accounts_table(now["top"], with_level=False),
    )))

    out.append(Heading(2, "Per protocol", "protocols"))
    ref = report["settings"]["reference_shock"]
    out.append(Para(f"Outcome columns: all volatile assets shocked together by {pct(ref)}, cascade with feedback.",
                    "muted"))
    out.append(Table(
        ("protocol", "markets", "positions", "collateral", "debt", "min health factor", "liquidatable now",
         f"liquidated at -{ref:.0%} (seq / eq)", f"bad debt at -{ref:.0%} (seq / eq)"),
        tuple((p["protocol"], str(p["markets"]), f"{p['accounts']:,}", usd(p["collateral_usd"]), usd(p["debt_usd"]),
               hf(p["min_health_factor"]), f"{p['liquidatable_now']:,} ({usd(p['liquidatable_now_debt_usd'])})",
               f"{usd(p['liquidated_usd_at_ref_sequential'])} / {usd(p['liquidated_usd_at_ref_equilibrium'])}",
               f"{usd(p['bad_debt_usd_at_ref_sequential'])} / {usd(p['bad_debt_usd_at_ref_equilibrium'])}")
              for p in report["protocols"]),
        ("l",) + ("r",) * 8))

    mw = report["market_wide"]
    if mw["scenarios"]:
        out.append(View("cascade", "Standard shocks to all volatile assets together — cascade outcome", (
            Para(VIEW_TEXT["cascade"][1] + " " + _modes_text(report), "muted"),
            Image(plot_name("market_wide_scenarios") + ".png", "liquidated collateral and bad debt by shock, both modes"),
            _scenario_table(mw["scenarios"], None),
            *((Para(_liquidators_text(report["settings"]["liquidators"]), "muted"),)
              if report["settings"].get("liquidators") else ()),
        )))

    for asset, a in report["assets"].items():
        out.append(Heading(2, f"{asset} — today {price(a['price_usd'])}", f"asset-{plot_name(asset)}"))
        out.extend(_depth_blocks(asset, a.get("depth")))
        lv = a["levels"]
        out.append(View("static", f"{asset}: {VIEW_TEXT['static'][0]}", (
            Para(VIEW_TEXT["static"][1], "muted"),
            Image(f"{plot_name(asset)}_levels.png", f"{asset} liquidation levels stacked by protocol"),
            Para(f"{lv['positions_with_level']:,} positions have a liquidation level on {asset}"
                 + (f"; {lv['positions_outside_range']:,} outside the plotted range." if lv["positions_outside_range"] else ".")),
            Para(f"Largest at-risk accounts on {asset} (liquidated by a drop of {pct(report['settings']['at_risk_shock'])} "
                 "or less, largest debt first):"),
            _accounts_table(a["at_risk_accounts"], with_level=True),
        )))
        cliffs = a["cliffs"]
        nearest = (_cliff_text(asset, a["nearest_cliff"], a["price_usd"]) if a["nearest_cliff"]
                   else f"No cliff up to a {pct(report['settings']['max_shock'])} shock.")
        out.append(View("cascade", f"{asset}: {VIEW_TEXT['cascade'][0]}", (
            Para(VIEW_TEXT["cascade"][1], "muted"),
            Para(SINGLE_ASSET_CAVEAT.format(asset=asset), "muted"),
            Para(CURVE_MODE_TEXT.get(a.get("curve_mode"), f"Curve mode: {a.get('curve_mode')}."), "muted"),
            Image(f"{plot_name(asset)}_curve.png", f"{asset} cascade curve with cliffs"),
            *((Para("WARNING: the solver reports this curve as NOT converged; treat it as indicative.", "alert"),)
              if not a.get("curve_converged", True) else ()),
            Para("Nearest cliff — " + nearest, "alert" if a["nearest_cliff"] else None),
            Table(("trigger shock", "trigger price", "end price before → after", "carried by", "what jumped",
                   "liquidated", "bad debt"),
                  tuple((pct(c["trigger_shock"]) + (f" – {pct(c['end_shock'])}" if len(c.get("steps") or ()) > 1 else ""),
                         price(c["trigger_price"]),
                         f"{price(c['end_price_before'])} → {price(c['end_price'])}", " → ".join(c["protocols"]),
                         _jumps_text(c), usd(c["liquidated_collateral_usd"]), usd(c["bad_debt_usd"])) for c in cliffs),
                  ("r", "r", "r", "l", "l", "r", "r"), empty="no cliffs"),
            Para(f"Standard shocks to {asset} alone, both modes. " + _modes_text(report)),
            Image(f"{plot_name(asset)}_scenarios.png", f"{asset} standard shocks"),
            _scenario_table(a["scenarios"], asset),
        )))

    out.append(Heading(2, "Largest at-risk accounts (lowest health factor)", "at-risk"))
    out.append(_accounts_table(report["at_risk_accounts"], with_level=False))
    out.append(Para(f"Report built in {report['timing']['build_s']:.2f} s.", "muted"))
    return out


_KIND_NAMES = {"constant_product": "constant-product pool", "uniswap_v3": "Uniswap V3 pool",
               "linear": "linear law", "exponential": "exponential law", "sqrt": "square-root law"}


def _depth_blocks(asset: str, d: Mapping[str, Any] | None) -> list[Any]:
    """Which depth the asset's sales are routed over, and the USD that moves its price 2% / 10%."""
    if not d:
        return []
    n = d["on_chain_venues"]
    kinds = ", ".join(_KIND_NAMES.get(k, k) for k in d.get("on_chain_kinds", ()))
    on = f"on-chain pools ({n} venue{'s' if n != 1 else ''}: {kinds})"
    offs = [f"off-chain depth from {o['source']} ({o['points']} point{'s' if o['points'] != 1 else ''}, quoted "
            f"up to {usd(o['max_usd_sold'])} sold at a {pct(o['max_impact'])} impact)" for o in d["off_chain"]]
    if not n:
        used = " + ".join(offs) + " only (no on-chain venue)"
    else:
        used = on + (" + " + " + ".join(offs) if offs else " only")
    moves = d["usd_to_move"]
    cols = ("depth", *(f"USD sold to move the price -{m['move']:.0%}" for m in moves))
    def cell(v: float | None) -> str:   # null with venues: no finite sale gets there (an exponential floor)
        return usd(v) if v is not None else "not reachable"

    rows = [("on-chain pools only", *(cell(m["on_chain_usd"]) if n else "– (no on-chain venue)" for m in moves))]
    if offs:
        names = ", ".join(o["source"] for o in d["off_chain"])
        rows.append((f"with off-chain depth ({names})",
                     *(cell(m["with_off_chain_usd"]) + (" (beyond the quotes)" if m.get("beyond_quotes") else "")
                       for m in moves)))
    note = (f"The tokens are routed over the venues as liquidation sales are (every venue ends at the same relative "
            f"price) and valued at today's price {price(d['price_usd'])} (tokens sold x today's price).")
    if any(m.get("beyond_quotes") for m in moves):
        note += (" \"Beyond the quotes\": the move is larger than the largest quoted impact; the off-chain curve "
                 "continues there with the slope of its last quoted segment (docs/model.md).")
    if not offs:
        note += " No off-chain depth given (defirisk report --depth FILE adds quoted depth)."
    return [Para(f"Depth used for {asset}: {used}."),
            Table(cols, tuple(rows), ("l",) + ("r",) * len(moves)),
            Para(note, "muted")]


def _market_model_text(mm: Mapping[str, Any]) -> str:
    """One line on the market the cascades run in: protocol oracles, routes, recovery."""
    orc = mm.get("protocol_oracles") or {}
    moved = {m: {a: d for a, d in v.items() if d != "market price"} for m, v in orc.items()}
    moved = {m: v for m, v in moved.items() if v}
    if moved:
        otext = "; ".join(f"{m}: " + ", ".join(f"{a} = {d}" for a, d in sorted(v.items())) for m, v in sorted(moved.items()))
        otext = f"protocol oracles other than the market price: {otext}"
    else:
        otext = "every protocol prices each asset at its market price"
    routes = mm.get("routes") or []
    rtext = ("sales routed through " + ", ".join(routes) + " and on along the quote's pools") if routes else \
        "every pool is quoted in a stablecoin (no cross routes)"
    rec = mm.get("recovery_halflife_s") or {}
    ctext = ("price impact recovers with half-life " + ", ".join(f"{a} {h:,.0f} s" for a, h in rec.items())) if rec else \
        "no price-impact recovery between blocks"
    return f"Market model: {otext}; {rtext}; {ctext}."


def _basis_text(report: Mapping[str, Any]) -> str:
    """What a headline cliff is computed with: the curve's mode and who liquidates."""
    st = report.get("settings", {})
    mode = st.get("curve_mode", "sequential")
    liq = st.get("liquidators") or {}
    who = liq.get("liquidators") if isinstance(liq, Mapping) else liq
    who_text = ("only liquidations that pay the liquidator happen; positions left standing are counted as "
                "\"liquidatable, not liquidated\"" if who == "profitable" else "every liquidatable position is liquidated")
    return f"({mode} mode; {who_text}; only this asset is shocked: see its section for the caveats.)"


def _modes_text(report: Mapping[str, Any]) -> str:
    band = report.get("settings", {}).get("equilibrium_band")
    return MODES_TEXT.format(band=f"{band:.1%}" if isinstance(band, (int, float)) else "1%")


def table_align(t: Table) -> tuple[str, ...]:
    if t.align and len(t.align) == len(t.columns):
        return t.align
    return ("l",) + ("r",) * (len(t.columns) - 1)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)

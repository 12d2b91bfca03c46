"""PNG charts for the report (matplotlib, Agg backend: no display, no fonts or files fetched).

Each function takes the report dict's section for one asset and returns PNG bytes; the HTML embeds
them as data URIs and the Markdown references them as files. Colours are fixed per meaning so the
reader (and the screenshot test) can tell the charts apart: protocols keep one colour everywhere,
the cascade curve is blue, cliffs are red.
"""
from __future__ import annotations

import io
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")  # before pyplot: never try to open a window from cron
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402

PROTOCOL_COLOURS = {
    "aave-v3": "#7b3fe4",      # purple
    "compound-v3": "#00a37a",  # green
    "maker": "#f2a900",        # amber
    "liquity": "#2f80ed",      # light blue
    "morpho-blue": "#e0457b",  # pink
}
CURVE_COLOUR = "#1f4e9c"
CLIFF_COLOUR = "#d62728"
LIQUIDATED_COLOUR = "#ff7f0e"
BAD_DEBT_COLOUR = "#8c1c13"
MODE_COLOURS = {"sequential": "#6c757d", "equilibrium": CURVE_COLOUR}
_DPI = 100


def protocol_colour(protocol: str) -> str:
    return PROTOCOL_COLOURS.get(protocol, "#555555")


def _usd(x: float, _pos: Any = None) -> str:
    ax = abs(x)
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if ax >= div:
            return f"${x / div:.3g}{suffix}"
    return f"${x:.3g}"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _style(ax: Any) -> None:
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def levels_png(asset: str, section: Mapping[str, Any]) -> bytes:
    """Static liquidation levels: collateral (USD) that becomes liquidatable at each price, stacked by protocol."""
    lv = section["levels"]
    edges = lv["bin_edges_usd"]
    width = edges[1] - edges[0]
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    bottom = [0.0] * len(centres)
    for proto, values in lv["collateral_usd_by_protocol"].items():
        ax.bar(centres, values, width=width * 0.92, bottom=bottom, color=protocol_colour(proto), label=proto)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.axvline(section["price_usd"], color="#111111", linestyle="--", linewidth=1.2,
               label=f"today ${section['price_usd']:,.2f}")
    ax.set_xlabel(f"{asset} price (USD)")
    ax.set_ylabel("collateral liquidatable (USD)")
    ax.yaxis.set_major_formatter(FuncFormatter(_usd))
    ax.xaxis.set_major_formatter(FuncFormatter(_usd))
    ax.set_title(f"{asset}: liquidation levels (static, no feedback)", loc="left", fontsize=11)
    _style(ax)
    if not lv["collateral_usd_by_protocol"]:
        ax.text(0.5, 0.5, "no position has a liquidation level in this range", transform=ax.transAxes,
                ha="center", va="center", color="#666666")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return _png(fig)


def curve_png(asset: str, section: Mapping[str, Any]) -> bytes:
    """Cascade curve: end price against initial shock (equilibrium), with cliffs marked, and losses below."""
    cv = section["curve"]
    shocks = [s if s is not None else float("nan") for s in cv["shock"]]
    nan = float("nan")
    fig, (top, bot) = plt.subplots(2, 1, figsize=(8, 5.2), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2], "hspace": 0.08})
    top.plot(shocks, [v if v is not None else nan for v in cv["shocked_price"]], color="#9a9a9a",
             linestyle="--", linewidth=1.2, label="shocked price (no cascade)")
    top.plot(shocks, [v if v is not None else nan for v in cv["end_price"]], color=CURVE_COLOUR,
             linewidth=2.2, label="end price after cascade")
    for i, c in enumerate(section["cliffs"]):
        top.axvline(c["trigger_shock"], color=CLIFF_COLOUR, linestyle=":", linewidth=1.4)
        # a staircase cliff ends at end_shock (a single jump: end_shock == trigger_shock)
        top.plot([c["trigger_shock"], c.get("end_shock") or c["trigger_shock"]], [c["end_price_before"], c["end_price"]],
                 color=CLIFF_COLOUR,
                 marker="o", markersize=6, linewidth=2.5, label="cliff" if i == 0 else None)
    top.set_ylabel(f"{asset} price (USD)")
    top.yaxis.set_major_formatter(FuncFormatter(_usd))
    top.set_title(f"{asset}: cascade outcome (with feedback) by initial shock", loc="left", fontsize=11)
    top.legend(fontsize=8, frameon=False, loc="upper right")
    _style(top)
    bot.plot(shocks, [v if v is not None else nan for v in cv["liquidated_collateral_usd"]],
             color=LIQUIDATED_COLOUR, linewidth=1.8, label="liquidated collateral")
    bot.fill_between(shocks, [v if v is not None else 0.0 for v in cv["bad_debt_usd"]], color=BAD_DEBT_COLOUR,
                     alpha=0.55, linewidth=0, label="bad debt")
    for c in section["cliffs"]:
        bot.axvline(c["trigger_shock"], color=CLIFF_COLOUR, linestyle=":", linewidth=1.4)
    bot.set_ylabel("USD")
    bot.yaxis.set_major_formatter(FuncFormatter(_usd))
    bot.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    bot.set_xlabel(f"initial shock to {asset} (drop from today's price)")
    bot.legend(fontsize=8, frameon=False, loc="upper left")
    _style(bot)
    return _png(fig)


def scenarios_png(title: str, scenarios: list[Mapping[str, Any]]) -> bytes:
    """Liquidated collateral and bad debt under the standard shocks, both modes side by side."""
    shocks = sorted({r["shock"] for r in scenarios})
    fig, ax = plt.subplots(figsize=(8, 3.0))
    width = 0.2
    for k, mode in enumerate(("sequential", "equilibrium")):
        rows = {r["shock"]: r for r in scenarios if r["mode"] == mode}
        xs = [i + (k - 0.5) * 2 * width for i in range(len(shocks))]
        liq = [(rows[s]["liquidated_collateral_usd"] or 0.0) if s in rows else 0.0 for s in shocks]
        bad = [(rows[s]["bad_debt_usd"] or 0.0) if s in rows else 0.0 for s in shocks]
        ax.bar([x - width / 2 for x in xs], liq, width=width, color=MODE_COLOURS[mode], label=f"liquidated ({mode})")
        ax.bar([x + width / 2 for x in xs], bad, width=width, color=BAD_DEBT_COLOUR,
               alpha=0.55 if mode == "sequential" else 0.95, label=f"bad debt ({mode})")
    ax.set_xticks(range(len(shocks)), [f"-{s:.0%}" for s in shocks])
    top = max([(r["liquidated_collateral_usd"] or 0.0) for r in scenarios] + [(r["bad_debt_usd"] or 0.0) for r in scenarios])
    ax.set_ylim(0, top * 1.4 if top > 0 else 1.0)   # headroom so the legend never covers a bar
    ax.yaxis.set_major_formatter(FuncFormatter(_usd))
    ax.set_title(title, loc="left", fontsize=11)
    ax.legend(fontsize=8, frameon=False, ncol=2, loc="upper left")
    _style(ax)
    return _png(fig)


def all_plots(report: Mapping[str, Any]) -> dict[str, bytes]:
    """Every chart of the report, keyed by file name (`<ASSET>_levels.png`, ...)."""
    out: dict[str, bytes] = {}
    if report["market_wide"]["scenarios"]:
        out["market_wide_scenarios.png"] = scenarios_png(
            "All volatile assets shocked together: liquidated and bad debt", report["market_wide"]["scenarios"])
    for asset, sec in report["assets"].items():
        out[f"{_safe(asset)}_levels.png"] = levels_png(asset, sec)
        out[f"{_safe(asset)}_curve.png"] = curve_png(asset, sec)
        out[f"{_safe(asset)}_scenarios.png"] = scenarios_png(f"{asset} alone: standard shocks", sec["scenarios"])
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


plot_name = _safe

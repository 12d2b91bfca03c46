"""A self-contained HTML page: inline CSS, charts as base64 PNG data URIs, no script, no CDN.

It opens offline from a mail attachment or a file share exactly as it does from the report dir.
"""
from __future__ import annotations

import base64
import html
from typing import Any, Mapping

from defirisk.report.layout import VIEW_TEXT, Bullets, Heading, Image, Para, Table, View, document, table_align

_CSS = """
:root { --fg:#1d2330; --muted:#5f6b7a; --line:#dde2ea; --bg:#ffffff; --panel:#f7f9fc;
        --now:#b03a2e; --static:#5b4b8a; --cascade:#23577a; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 28px 24px 60px; }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 8px; }
p { margin: 6px 0 10px; }
.muted { color: var(--muted); font-size: 13.5px; }
.alert { color: #8c1c13; font-weight: 600; }
.ok { color: #1e7b34; font-weight: 600; }
ul { margin: 6px 0 12px; padding-left: 22px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-size: 13.5px;
        font-variant-numeric: tabular-nums; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); font-weight: 600; text-align: left; }
.tablewrap { overflow-x: auto; }
td.r, th.r { text-align: right; }
tr:hover td { background: #fbfcfe; }
.empty { color: var(--muted); font-style: italic; }
img.chart { display: block; max-width: 100%; height: auto; margin: 10px 0 12px; }
section.view { border: 1px solid var(--line); border-left: 6px solid; border-radius: 6px;
               padding: 10px 16px 6px; margin: 18px 0; background: #fff; }
section.view h3 { margin-top: 4px; }
section.view .tag { display: inline-block; font-size: 11px; font-weight: 700; letter-spacing: .05em;
                    text-transform: uppercase; color: #fff; border-radius: 3px; padding: 1px 6px;
                    margin-right: 8px; vertical-align: 2px; }
section.view-now { border-left-color: var(--now); }      section.view-now .tag { background: var(--now); }
section.view-static { border-left-color: var(--static); } section.view-static .tag { background: var(--static); }
section.view-cascade { border-left-color: var(--cascade); } section.view-cascade .tag { background: var(--cascade); }
.fired { color: #8c1c13; font-weight: 700; }
"""

_TAG = {"now": "now", "static": "static", "cascade": "with feedback"}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(t: Table) -> str:
    if not t.rows:
        return f'<p class="empty">{_e(t.empty)}</p>'
    align = table_align(t)
    head = "".join(f'<th class="{a}">{_e(c)}</th>' for c, a in zip(t.columns, align))
    body = []
    for row in t.rows:
        cells = []
        for c, a in zip(row, align):
            cls = a + (" fired" if c == "FIRED" else "")
            cells.append(f'<td class="{cls}">{_e(c)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _blocks(blocks: Any, plots: Mapping[str, bytes]) -> list[str]:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' id="{_e(b.anchor)}"' if b.anchor else ""
            out.append(f"<h{b.level}{anchor}>{_e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            cls = f' class="{b.cls}"' if b.cls else ""
            out.append(f"<p{cls}>{_e(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            out.append(_table(b))
        elif isinstance(b, Image):
            png = plots.get(b.name)
            if png is None:
                raise KeyError(f"chart {b.name} was not rendered")
            data = base64.b64encode(png).decode("ascii")
            out.append(f'<img class="chart" alt="{_e(b.alt)}" src="data:image/png;base64,{data}">')
        elif isinstance(b, View):
            out.append(f'<section class="view view-{b.kind}"><h3><span class="tag">{_e(_TAG[b.kind])}</span>'
                       f"{_e(b.title)}</h3>")
            out += _blocks(b.blocks, plots)
            out.append("</section>")
        else:  # pragma: no cover
            raise TypeError(f"unknown block {type(b).__name__}")
    return out


def render_html(report: Mapping[str, Any], plots: Mapping[str, bytes]) -> str:
    """The page as one string. `plots` maps chart file names (plots.all_plots) to PNG bytes."""
    title = "defirisk keeper-risk report"
    src = report["source"]
    if src.get("block_number") is not None:
        title += f" — block {src['block_number']}"
    body = "\n".join(_blocks(document(report), plots))
    assert set(VIEW_TEXT) == set(_TAG)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<meta name=\"generator\" content=\"defirisk {_e(report['tool']['version'])}\">\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )

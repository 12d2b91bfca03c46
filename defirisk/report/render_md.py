"""Markdown for governance-forum posts; charts are referenced as PNG files in plots/ beside it."""
from __future__ import annotations

from typing import Any, Mapping

from defirisk.report.layout import Bullets, Heading, Image, Para, Table, View, document, table_align


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> list[str]:
    if not t.rows:
        return [f"_{t.empty}_", ""]
    align = {"l": ":---", "r": "---:"}
    lines = ["| " + " | ".join(_cell(c) for c in t.columns) + " |",
             "| " + " | ".join(align[a] for a in table_align(t)) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    return lines + [""]


def _blocks(blocks: Any, plots_dir: str) -> list[str]:
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            text = f"_{b.text}_" if b.cls == "muted" else (f"**{b.text}**" if b.cls == "alert" else b.text)
            lines += [text, ""]
        elif isinstance(b, Bullets):
            lines += [f"- {i}" for i in b.items] + [""]
        elif isinstance(b, Table):
            lines += _table(b)
        elif isinstance(b, Image):
            lines += [f"![{b.alt}]({plots_dir}/{b.name})", ""]
        elif isinstance(b, View):
            # Markdown has no boxes: a level-3 heading tagged with the view keeps the views apart.
            lines += [f"### [{b.kind.upper()}] {b.title}", ""]
            lines += _blocks(b.blocks, plots_dir)
        else:  # pragma: no cover - a new block type must be taught to every renderer
            raise TypeError(f"unknown block {type(b).__name__}")
    return lines


def render_md(report: Mapping[str, Any], plots_dir: str = "plots") -> str:
    return "\n".join(_blocks(document(report), plots_dir)).rstrip() + "\n"

"""The machine-readable report: the report dict as JSON (schema documented in docs/report.md)."""
from __future__ import annotations

import json
from typing import Any, Mapping


def render_json(report: Mapping[str, Any]) -> str:
    # allow_nan=False: the schema promises null for missing numbers, never NaN (not valid JSON).
    return json.dumps(report, indent=2, allow_nan=False, ensure_ascii=False) + "\n"

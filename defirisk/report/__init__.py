"""The keeper-risk report: build (solver API -> report dict), render (md / html / json, PNG plots),
history (SQLite, locked) and alerts (rule grammar). `run_report` ties them together for the CLI."""
from defirisk.report.alerts import AlertResult, Rule, evaluate, parse_rule, parse_rules
from defirisk.report.build import SCHEMA, STANDARD_SHOCKS, ReportSettings, SourceInfo, build_report, key_figures
from defirisk.report.run import RunOptions, RunResult, parse_formats, run_report
from defirisk.report.source import resolve_source

__all__ = [
    "SCHEMA", "STANDARD_SHOCKS", "AlertResult", "ReportSettings", "Rule", "RunOptions", "RunResult",
    "SourceInfo", "build_report", "evaluate", "key_figures", "parse_formats", "parse_rule", "parse_rules",
    "resolve_source", "run_report",
]

"""Forked-chain validation: execute the predicted cascade on an anvil fork and compare.

    from defirisk.validate import validate
    report = validate({"WETH": 0.25})            # devnet (default scenario) as the upstream
    report.agree, report.comparison.problems()

Modules: guard (no write reaches a non-anvil endpoint), fork (anvil fork B of upstream A),
contracts/funding/oracles/venues (cheat-code plumbing on B), liquidators (protocol entry points),
executor (the rounds), compare (predicted vs executed), run (the pipeline).
"""
from defirisk.validate.compare import Comparison, Tolerances, compare
from defirisk.validate.executor import Execution, execute
from defirisk.validate.fork import Fork, ForkChain
from defirisk.validate.guard import WriteGuard
from defirisk.validate.run import ValidationReport, validate

__all__ = ["validate", "ValidationReport", "Comparison", "Tolerances", "compare", "Execution", "execute",
           "Fork", "ForkChain", "WriteGuard"]

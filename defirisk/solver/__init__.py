"""The public solver API: cascades (sequential, equilibrium), curves and cliffs, static views."""
from defirisk.solver.curve import cascade_curve
from defirisk.solver.engine import betas_from_correlation, prepare, solve
from defirisk.solver.result import CascadeResult, Cliff, CurveResult, Totals
from defirisk.solver.views import health_factors, liquidatable_now, liquidation_levels

__all__ = ["solve", "cascade_curve", "prepare", "betas_from_correlation", "health_factors", "liquidatable_now",
           "liquidation_levels", "CascadeResult", "CurveResult", "Cliff", "Totals"]

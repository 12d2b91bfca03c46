"""defirisk: liquidation-cascade risk for DeFi lending, across protocols, with real DEX depth."""
__version__ = "0.1.0"

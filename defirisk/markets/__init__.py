"""Markets: prices and market depth (oracles, DEX reads) and the pure impact curves (impact.py)."""

"""Devnet: real protocol code deployed on a local anvil from scenario files."""

"""Thin launcher: `python cli.py ...` is the same as the `defirisk` console script."""
from defirisk.cli import main

if __name__ == "__main__":
    main()

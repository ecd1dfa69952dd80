#!/usr/bin/env python
"""Efficiency benchmark of vision backbones: `python run_bench.py --help` (the CLI lives in bench/cli.py)."""

from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

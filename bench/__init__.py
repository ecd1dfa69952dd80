"""Measurement: FLOP counting, analytic formulas, timing, memory, sweeps, CSV, plots, reports."""

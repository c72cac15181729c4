"""Benchmarks for tfs-reconciler (issue 6): scale, commit-to-live latency, cost, zero downtime.

Run ``python -m bench`` (full, < 10 min) or ``python -m bench --quick`` (< 1 min) from the
project root; figures are printed and written to ``bench/results.md``.
"""

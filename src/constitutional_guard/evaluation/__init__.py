"""Metrics, threshold selection, reports and benchmarks."""

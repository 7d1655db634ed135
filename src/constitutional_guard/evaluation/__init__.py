"""Evaluation harness, reports and benchmarks (binary metrics and thresholds: ``constitutional_guard.metrics``)."""

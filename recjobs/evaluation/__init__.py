"""Evaluation: the holdout, the ranking metrics and their intervals, the forward metric and the
per-run report. A new metric goes in metrics.py."""

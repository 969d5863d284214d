"""Experiments on built-in synthetic data (`surgflow demo`, `surgflow experiment ...`): they use
training, evaluation and the audit, and nothing below them imports this package."""

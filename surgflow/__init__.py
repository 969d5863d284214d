"""surgflow: end-to-end video learning for surgical workflow analysis."""

__version__ = "0.1.0"

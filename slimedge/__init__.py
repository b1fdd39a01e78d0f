"""SlimEdge: one multi-view CNN over a fleet of unequal edge devices."""

__version__ = "0.1.0"

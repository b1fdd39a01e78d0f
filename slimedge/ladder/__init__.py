"""The pruning ladder: levels of one trained branch with measured costs and cached features,
the system-accuracy evaluator over them, and view importance."""

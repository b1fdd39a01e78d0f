"""`slimedge simulate`: many random fleets, each planned and set against every baseline under
each cost model, on Dask; results as Parquet rows, a summary, plots and `simulate.md`.

Modules: `generators` (scenarios from a seed), `state` (per-process ladder and shared accuracy
memo), `evaluate` (one scenario -> rows), `runner` (chunks on Dask, resumable), `results`
(reading rows, the summary), `plots`, `markdown`, `commands` (the CLI handler).
"""

from __future__ import annotations

from slimedge.errors import SlimEdgeError


class SimulateError(SlimEdgeError):
    """A sweep request that cannot be served: it names the option or file at fault."""


GENERATORS = ("catalog", "published")
COST_MODELS = ("per-layer", "authors")

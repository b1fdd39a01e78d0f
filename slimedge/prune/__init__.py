"""Structured (filter) pruning of Keras 3 functional models.

One module per job, as in Torch-Pruning: `graph` finds which tensors' channels must shrink
together, `criteria` ranks the channels of each group, `slicing` builds the physically smaller
model, `levels` turns a ladder level into per-group channel counts. This package itself imports
nothing heavy; the submodules import Keras.
"""

from slimedge.errors import SlimEdgeError


class PruneError(SlimEdgeError, ValueError):
    """A model, layer, group or level that the pruning code cannot handle; names the culprit."""


__all__ = ["PruneError"]

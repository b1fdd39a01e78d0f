"""Multi-view datasets: one container for every later stage, and the ways to fill it."""

from slimedge.data.container import SPLITS, Dataset, load_dataset

__all__ = ["SPLITS", "Dataset", "load_dataset"]

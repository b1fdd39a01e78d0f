"""Errors a user can act on: each names the file, field, layer or device at fault."""


class SlimEdgeError(Exception):
    """Base class; the CLI prints these as one line and exits non-zero."""


class DatasetError(SlimEdgeError):
    """A dataset file or a source folder (renders, meshes) that cannot be used."""


class StageError(SlimEdgeError):
    """A pipeline stage failed; the last good artifact was left in place."""

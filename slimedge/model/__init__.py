"""The MVCNN in two Keras models: the per-view ``branch`` and the aggregator's ``head``.

Submodules import Keras (and so TensorFlow); this package itself imports nothing heavy.
"""

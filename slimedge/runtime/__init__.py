"""Device-side and aggregator runtime: what runs on the boards. Nothing here imports TensorFlow.

- `slimedge.runtime.branch`: `BranchRunner`, one view's branch `.tflite` in LiteRT.
- `slimedge.runtime.frames`: the per-frame feature message (encode/decode) and the input
  file of the standalone C++ aggregator.

Submodules are imported on use, so `import slimedge.runtime` stays cheap.
"""

"""Device-side and aggregator runtime: what runs on the boards. Nothing here imports TensorFlow.

- `slimedge.runtime.branch`: `BranchRunner`, one view's branch `.tflite` in LiteRT.
- `slimedge.runtime.frames`: the per-frame feature message (encode/decode) and the input
  file of the standalone C++ aggregator.
- `slimedge.runtime.topics`, `slimedge.runtime.mqtt`: topic names and the MQTT link.
- `slimedge.runtime.agent` (`slimedge agent run`): the device agent; it verifies and loads its
  model with `device_setup` (LiteRT, the Edge TPU delegate, or TFLite Micro via `mcu`) and
  reads frames from `sources`.

Submodules are imported on use, so `import slimedge.runtime` stays cheap.
"""

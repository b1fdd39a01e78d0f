"""Measuring a converted model: TFLite Micro arena bytes, LiteRT latency, tensor sizes."""

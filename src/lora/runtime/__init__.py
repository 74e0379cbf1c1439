"""Runtimes an export is checked in: onnxruntime (our decoder) and moonshine-cpp (Moonshine's own)."""

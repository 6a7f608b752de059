"""Inference backends behind one interface: onnxruntime (CPU; CUDA/TensorRT EPs), TensorRT."""

from __future__ import annotations

from edge.inference.backend import InferenceSession, create_session

__all__ = ["InferenceSession", "create_session"]

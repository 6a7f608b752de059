"""SFace embeddings: every aligned face of a frame in one batched run, L2-normalised."""

from __future__ import annotations

import numpy as np

from edge.inference import InferenceSession

DIM = 128


class SFace:
    def __init__(self, session: InferenceSession, max_batch: int = 16) -> None:
        self.session = session
        self.max_batch = max_batch
        self._input = session.input_names[0]

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """(n, 128) float32 unit vectors for n aligned 112x112 BGR crops."""
        if not crops:
            return np.zeros((0, DIM), np.float32)
        out = []
        for start in range(0, len(crops), self.max_batch):
            chunk = np.stack(crops[start:start + self.max_batch])  # n, 112, 112, 3 (BGR)
            # The graph wants RGB 0-255 NCHW and normalises itself.
            blob = np.ascontiguousarray(chunk[..., ::-1].transpose(0, 3, 1, 2), np.float32)
            out.append(self.session.run({self._input: blob})[0])
        feats = np.concatenate(out).astype(np.float32, copy=False)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return feats / np.maximum(norms, 1e-12)

"""What the pipeline knows about one face in one image.

Coordinates are always in the source image's pixels (after EXIF orientation), whatever size the
detector ran at, so every consumer can draw, crop or compare boxes without knowing the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Face:
    box: np.ndarray  # float32 [x, y, w, h]
    score: float
    landmarks: np.ndarray  # float32 (5, 2): right eye, left eye, nose tip, mouth right, mouth left
    quality: dict[str, float] = field(default_factory=dict)
    embedding: np.ndarray | None = None  # float32 (128,), L2-normalised

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])

    def to_json(self, with_embedding: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "quality": {k: round(float(v), 4) for k, v in self.quality.items()},
        }
        if with_embedding and self.embedding is not None:
            out["embedding"] = [float(v) for v in self.embedding]
        return out

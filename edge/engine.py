"""The recognition engine: image in, detected, aligned, quality-scored and embedded faces out.

Why one object: the CLI, the enrollment service and the daemon must see exactly the same faces
for the same pixels, so model loading, backend choice and the rescue policy live here once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import Config
from edge.detection import rescue as rescue_views
from edge.detection.yunet import YuNet, concat
from edge.embedding.align import align
from edge.embedding.sface import SFace
from edge.face import Face
from edge.imageio import LoadedImage, load_image
from edge.inference import create_session
from edge.models import load_manifest, resolve_prepared
from edge.quality import measure, score

log = logging.getLogger(__name__)

#: Decode big photos at reduced size only down to twice the detector's input: the rescue tiles
#: look at the frame at about that resolution, so nothing they could find is lost.
DECODE_FACTOR = 2


@dataclass(frozen=True)
class ImageResult:
    image: LoadedImage
    faces: list[Face]


class FaceEngine:
    def __init__(self, config: Config) -> None:
        self.config = config
        manifest = load_manifest()
        det_spec, det_path = resolve_prepared(config.models.dir, "detector", manifest)
        emb_spec, emb_path = resolve_prepared(config.models.dir, "embedder", manifest)
        det_session = create_session(det_path, config.inference)
        emb_session = create_session(emb_path, config.inference)
        self.detector = YuNet(det_session, config.detection)
        self.embedder = SFace(emb_session)
        self.detector_id = det_spec.id
        self.embedder_id = emb_spec.id
        self.backend = emb_session.backend

    # -- detection ---------------------------------------------------------------------------
    def detect(self, image: np.ndarray, rescue: bool | None = None) -> list[Face]:
        """Faces in ``image`` (BGR), largest first; rescue passes only when the first finds none."""
        h, w = image.shape[:2]
        faces = self.detector.nms(self.detector.raw(image), (w, h))
        use_rescue = self.config.detection.rescue if rescue is None else rescue
        if not faces and use_rescue:
            for view in rescue_views.views(image, self.config.detection.input_size):
                cands = self.detector.raw(view.image, view.input_size)
                if len(cands):
                    mapped = rescue_views.to_source(concat([cands]), view.to_source)
                    faces = self.detector.nms(mapped, (w, h))
                    if faces:
                        log.debug("rescue pass found faces",
                                  extra={"view": view.name, "faces": len(faces)})
                        break
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    # -- embedding ---------------------------------------------------------------------------
    def describe(self, image: np.ndarray, faces: list[Face], embed: bool = True) -> list[Face]:
        """Fill quality (and embeddings, all faces in one batch) for ``faces`` of ``image``."""
        crops = [align(image, f.landmarks) for f in faces]
        for face, crop in zip(faces, crops, strict=False):
            face.quality = measure(crop, face.box, face.landmarks)
            face.quality["score"] = score(face.quality, self.config.quality)
        if embed and faces:
            for face, vec in zip(faces, self.embedder.embed(crops), strict=False):
                face.embedding = vec
        return faces

    def analyze(self, image: np.ndarray, embed: bool = True,
                rescue: bool | None = None) -> list[Face]:
        return self.describe(image, self.detect(image, rescue), embed)

    def analyze_file(self, source: str | os.PathLike[str] | bytes, embed: bool = True,
                     rescue: bool | None = None) -> ImageResult:
        """Load an image the way an enrollment desk needs, analyze it, report source pixels."""
        cfg = self.config.images
        loaded = load_image(source, max_pixels=cfg.max_pixels, max_bytes=cfg.max_bytes,
                            target_side=self.config.detection.input_size * DECODE_FACTOR)
        faces = self.analyze(loaded.pixels, embed, rescue)
        if loaded.scale != 1.0:
            for face in faces:
                face.box = face.box * loaded.scale
                face.landmarks = face.landmarks * loaded.scale
                face.quality["size"] *= loaded.scale
                face.quality["inter_ocular"] *= loaded.scale
        return ImageResult(loaded, faces)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two L2-normalised embeddings."""
    return float(np.dot(a, b))


def default_fixture_dir() -> Path:
    """The shipped sample portraits (source checkout), used by the demo and the tests."""
    return Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "faces"

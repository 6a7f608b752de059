"""The recognition engine: image in, detected, aligned, quality-scored and embedded faces out.

Why one object: the CLI, the enrollment service and the daemon must see exactly the same faces
for the same pixels, so model loading, backend choice and the rescue policy live here once.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from edge.config import Config
from edge.cpus import available_cpus
from edge.detection import rescue as rescue_views
from edge.detection.yunet import YuNet, concat
from edge.embedding.align import align
from edge.embedding.sface import SFace
from edge.errors import ImageError
from edge.face import Face
from edge.imageio import LoadedImage, load_image
from edge.inference import create_session
from edge.inference.engine_cache import role_profile
from edge.models import load_manifest, resolve_prepared
from edge.quality import measure, score

log = logging.getLogger(__name__)

#: Decode big photos at reduced size (JPEG DCT scaling) only down to 1.5x the detector's input:
#: the rescue tiles look at 60% of the frame at the network's size, so they still see every pixel
#: they could use, and a 12-megapixel photo decodes in a quarter of the time.
DECODE_FACTOR = 1.5
#: Rotations tried around each face to find its upright orientation (see FaceEngine._upright).
ORIENTATIONS = (0.0, 45.0, -45.0, 90.0, -90.0, 135.0, -135.0, 180.0)
#: The unrotated view wins ties: only a clearly better score justifies a rotated alignment.
ORIENTATION_BIAS = 0.02
SWEEP_SIDE = 192
#: Upright faces score >= 0.92 on the deepface photos (5th percentile 0.933), faces rolled 60
#: degrees or more score <= 0.90 (first 40 deepface photos at 960 px, rotated 45-135 degrees,
#: measured 2026-11-29): only a face below this is swept.
SWEEP_BELOW_SCORE = 0.92
SWEEP_SCORE = 0.3


@dataclass(frozen=True)
class ImageResult:
    image: LoadedImage
    faces: list[Face]


Source = str | os.PathLike[str] | bytes


def default_jobs(inputs: int) -> int:
    """Images analysed at once by a batch: one per core this process may run on, at most one
    per input."""
    return max(1, min(available_cpus(), inputs))


class FaceEngine:
    """Detection, alignment, quality and embedding behind one object.

    ``jobs`` is how many images the caller will analyse at once (``analyze_files``). With more
    than one, each model runs on a single thread (when ``[inference] threads`` is 0) and the
    cores are shared out image by image instead: on a 2-core x86 SFace takes 16 ms on one thread
    and 12 ms on two, so two images side by side get through almost twice the work of one image
    on two threads, and decoding, resizing and alignment run in parallel too.
    """

    def __init__(self, config: Config, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.config = config
        self.jobs = jobs
        manifest = load_manifest()
        det_spec, det_path = resolve_prepared(config.models.dir, "detector", manifest)
        emb_spec, emb_path = resolve_prepared(config.models.dir, "embedder", manifest)
        # Measured on a 2-core x86: YuNet at 640x384 takes 5.7 ms on one thread, 8.4 ms on two.
        det_session = create_session(
            det_path, config.inference, auto_threads=1,
            profile=role_profile("detector", det_spec.input_name, config.detection.input_size))
        emb_session = create_session(emb_path, config.inference,
                                     auto_threads=1 if jobs > 1 else 0,
                                     profile=role_profile("embedder", emb_spec.input_name,
                                                          config.detection.input_size))
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
        if use_rescue:
            faces = [self._upright(image, f) if f.score < SWEEP_BELOW_SCORE else f
                     for f in faces]
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def _upright(self, image: np.ndarray, face: Face) -> Face:
        """Find the orientation in which this face looks most like a face, and use its landmarks.

        YuNet still finds heads tilted 60-90 degrees, but then places the landmarks as if the
        head were upright, and the alignment built on them ruins the embedding. Its score peaks
        when the face is upright, so a sweep of small rotated crops around the face (eight
        detections on a crop of about twice the face) tells the true orientation; the winner's
        landmarks, mapped back, make the similarity alignment undo the tilt.
        """
        centre = face.box[:2] + face.box[2:] / 2
        half = float(face.box[2:].max()) * 1.2
        h, w = image.shape[:2]
        x0, y0 = int(max(0.0, centre[0] - half)), int(max(0.0, centre[1] - half))
        x1, y1 = int(min(w, centre[0] + half)), int(min(h, centre[1] + half))
        crop = image[y0:y1, x0:x1]
        local = centre - np.array([x0, y0], np.float32)
        best: Face | None = None
        best_degrees, best_score = 0.0, -1.0
        for degrees in ORIENTATIONS:
            view = rescue_views.rotated(crop, degrees)
            # A fixed, small network input: the face then spans ~40% of it whatever its size in
            # the photo (a 900 px face at full resolution is beyond YuNet's anchors, and only
            # partial-face hits would compete), and eight passes stay cheap.
            cands = rescue_views.to_source(
                self.detector.raw(view.image, SWEEP_SIDE, score_threshold=SWEEP_SCORE),
                view.to_source)
            if not len(cands):
                continue
            dist = np.linalg.norm(cands.boxes[:, :2] + cands.boxes[:, 2:] / 2 - local, axis=1)
            # The same face: centred on it and about its size (a view-filling false hit is not).
            ratio = np.sqrt(cands.boxes[:, 2] * cands.boxes[:, 3]) / float(np.sqrt(face.area))
            near = (dist < 0.5 * half) & (ratio > 0.6) & (ratio < 1.6)
            if not near.any():
                continue
            i = int(np.argmax(np.where(near, cands.scores, -1.0)))
            score = float(cands.scores[i]) + (ORIENTATION_BIAS if degrees == 0 else 0.0)
            if score > best_score:
                best_degrees, best_score = degrees, score
                # Only the landmarks change: the box (what tracking and "largest first" use)
                # stays the full-frame detection's.
                best = Face(box=face.box, score=face.score,
                            landmarks=cands.landmarks[i] + np.array([x0, y0], np.float32))
        # Upright already: keep the full-frame detection, which saw the face at its own scale.
        return face if best is None or best_degrees == 0.0 else best

    # -- embedding ---------------------------------------------------------------------------
    def describe(self, image: np.ndarray, faces: list[Face], embed: bool = True) -> list[Face]:
        """Fill quality (and embeddings, all faces in one batch) for ``faces`` of ``image``."""
        crops = self.measure(image, faces)
        if embed:
            self.embed_into(faces, crops)
        return faces

    def measure(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        """Align every face and fill its quality; returns the aligned crops for embedding."""
        crops = [align(image, f.landmarks) for f in faces]
        for face, crop in zip(faces, crops, strict=True):
            face.quality = measure(crop, face.box, face.landmarks)
            face.quality["score"] = score(face.quality, self.config.quality)
        return crops

    def embed_into(self, faces: list[Face], crops: list[np.ndarray]) -> None:
        """One batched SFace run for the aligned ``crops`` of ``faces``."""
        if faces:
            for face, vec in zip(faces, self.embedder.embed(crops), strict=True):
                face.embedding = vec

    def analyze(self, image: np.ndarray, embed: bool = True,
                rescue: bool | None = None) -> list[Face]:
        return self.describe(image, self.detect(image, rescue), embed)

    def analyze_file(self, source: Source, embed: bool = True,
                     rescue: bool | None = None) -> ImageResult:
        """Load an image the way an enrollment desk needs, analyze it, report source pixels."""
        return self.analyze_loaded(load_photo(self.config, source), embed, rescue)

    def analyze_loaded(self, loaded: LoadedImage, embed: bool = True,
                       rescue: bool | None = None) -> ImageResult:
        """Analyze a photo from ``load_photo``; boxes and landmarks in the file's own pixels."""
        faces = self.analyze(loaded.pixels, embed, rescue)
        if loaded.scale != 1.0:
            for face in faces:
                face.box = face.box * loaded.scale
                face.landmarks = face.landmarks * loaded.scale
                face.quality["size"] *= loaded.scale
                face.quality["inter_ocular"] *= loaded.scale
        return ImageResult(loaded, faces)

    def analyze_files(self, sources: Iterable[Source], embed: bool = True,
                      rescue: bool | None = None) -> Iterator[ImageResult | ImageError]:
        """``analyze_file`` for each source, ``self.jobs`` at a time, results in input order.

        A refused image is yielded as its ``ImageError`` rather than raised, so one bad file in
        a batch costs only its own line.
        """
        yield from _batch(self.config, sources, self.jobs, lambda: self, embed, rescue)

    @classmethod
    def open_and_analyze(cls, config: Config, sources: Iterable[Source], jobs: int,
                         embed: bool = True, rescue: bool | None = None,
                         ) -> Iterator[ImageResult | ImageError]:
        """``FaceEngine(config, jobs).analyze_files(sources)``, with the start-up overlapped.

        Loading the models takes ~100 ms on one core, and decoding needs no model: the first
        photos decode on the other core meanwhile. For a one-shot command (``embed`` on a
        folder, ``verify``) that is a few percent of its whole life. A model that cannot load
        raises its error from the first readable image's result, or at the end.
        """
        with ThreadPoolExecutor(1, thread_name_prefix="edge-load") as loader:
            engine = loader.submit(cls, config, jobs)
            yield from _batch(config, sources, jobs, engine.result, embed, rescue)
            engine.result()  # even when every image was refused, a broken setup is reported


def load_photo(config: Config, source: Source) -> LoadedImage:
    """Decode ``source`` as the engine analyses it: within ``[images]`` limits, and big JPEGs at
    a reduced size that still leaves DECODE_FACTOR x the detector's input."""
    cfg = config.images
    return load_image(source, max_pixels=cfg.max_pixels, max_bytes=cfg.max_bytes,
                      target_side=int(config.detection.input_size * DECODE_FACTOR))


#: Photos in flight per job: enough to keep every core busy (decoding needs no model, so the
#: first photos decode while ``open_and_analyze`` loads them), few enough to bound memory for a
#: batch of any length (a decoded photo is at most ~9 MB).
AHEAD_PER_JOB = 2


def _batch(config: Config, sources: Iterable[Source], jobs: int,
           engine: Callable[[], FaceEngine], embed: bool,
           rescue: bool | None) -> Iterator[ImageResult | ImageError]:
    """Decode and analyze on ``jobs`` threads, yielding in input order; a refused image is
    yielded as its ``ImageError``.

    onnxruntime, OpenCV and Pillow's decoders release the GIL, so threads fill the cores. (A
    separate decoding pool running further ahead was measured: no faster, 40 MB more memory.)
    """
    def one(source: Source) -> ImageResult | ImageError:
        try:
            loaded = load_photo(config, source)
        except ImageError as exc:
            return exc
        return engine().analyze_loaded(loaded, embed, rescue)

    if jobs == 1:  # on the caller's thread: no pool to start, nothing decoded ahead
        yield from map(one, sources)
        return
    with ThreadPoolExecutor(jobs, thread_name_prefix="edge-analyze") as pool:
        pending: deque[Future[ImageResult | ImageError]] = deque()
        try:
            for source in sources:
                pending.append(pool.submit(one, source))
                if len(pending) >= AHEAD_PER_JOB * jobs:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # the caller stopped early, or an error escaped
                future.cancel()


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two L2-normalised embeddings."""
    return float(np.dot(a, b))

"""A folder of still images as a camera: the simplest way to replay exactly chosen frames."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import cv2
import numpy as np

from edge.camera.errors import CameraError
from edge.camera.frame import Frame, SourceGeometry
from edge.camera.pacing import Pacer

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm",
                            ".pgm", ".pnm"})
#: A folder has no frame rate of its own; this is used when ``[camera] fps`` is 0.
DEFAULT_IMAGE_FPS = 10.0


def _natural_key(path: Path) -> list[object]:
    """``frame2`` before ``frame10``: exported sequences are rarely zero-padded."""
    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r"(\d+)", path.name)]


class ImageDirSource(SourceGeometry):
    """Yields the folder's images in natural name order, paced at ``fps``, optionally looped.

    An image that does not decode is skipped with a warning (counted in ``skipped``) rather than
    ending the replay; a pass in which no image decodes is an error, so a folder of junk cannot
    loop forever without a frame.
    """

    kind = "images"

    def __init__(self, path: str | Path, *, realtime: bool = True, loop: bool = False,
                 fps: float = 0.0) -> None:
        self.path = Path(path)
        self.realtime = realtime
        self.loop = loop
        self._fps = fps if fps > 0 else DEFAULT_IMAGE_FPS
        self._files: list[Path] = []
        self._pos = 0
        self._index = 0
        self._decoded_this_pass = 0
        self._size = (0, 0)  # then the first image's size; later images may differ
        self._pacer = Pacer(self._fps)
        self._opened = False
        self.skipped = 0


    def open(self) -> None:
        if self._opened:
            return
        if not self.path.is_dir():
            raise CameraError(f"camera source {str(self.path)!r}: no such directory")
        self._files = sorted((p for p in self.path.iterdir()
                              if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                             key=_natural_key)
        if not self._files:
            raise CameraError(f"camera source {str(self.path)!r}: no images in this directory "
                              f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        self._pos = 0
        self._decoded_this_pass = 0
        self._pacer.reset()
        self._opened = True
        log.info("image directory opened", extra={"path": str(self.path), "images":
                                                  len(self._files), "fps": self._fps})

    def read(self) -> Frame | None:
        if not self._opened:
            raise CameraError(f"camera source {str(self.path)!r}: read() before open()")
        pixels = self._next_image()
        if pixels is None:
            return None
        if self.size == (0, 0):
            self._size = (int(pixels.shape[1]), int(pixels.shape[0]))
        if self.realtime:
            self._pacer.wait()
        frame = Frame(pixels=pixels, index=self._index, t_capture=time.monotonic(),
                      t_wall=time.time())
        self._index += 1
        return frame

    def _next_image(self) -> np.ndarray | None:
        while True:
            if self._pos >= len(self._files):
                if self._decoded_this_pass == 0:
                    raise CameraError(f"camera source {str(self.path)!r}: none of its "
                                      f"{len(self._files)} images can be decoded")
                if not self.loop:
                    return None
                self._pos = 0
                self._decoded_this_pass = 0
            path = self._files[self._pos]
            self._pos += 1
            pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if pixels is None:
                self.skipped += 1
                log.warning("image skipped: cannot decode", extra={"path": str(path)})
                continue
            self._decoded_this_pass += 1
            return pixels

    def interrupt(self) -> None:
        """Safe from another thread: cuts a pacing wait short so a stop is quick."""
        self._pacer.interrupt()

    def close(self) -> None:
        self._opened = False

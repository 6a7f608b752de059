"""A recorded clip as a camera: for tests, demos and replaying an incident."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import cv2

from edge.camera.convert import to_bgr
from edge.camera.errors import CameraError
from edge.camera.frame import Frame, SourceGeometry
from edge.camera.pacing import Pacer

log = logging.getLogger(__name__)

#: Used when the container does not say its frame rate (some AVI/MJPEG files report 0).
DEFAULT_FILE_FPS = 25.0


class VideoFileSource(SourceGeometry):
    """Reads a clip with OpenCV, optionally paced to its frame rate and looped."""

    kind = "file"

    def __init__(self, path: str | Path, *, realtime: bool = True, loop: bool = False,
                 fps: float = 0.0) -> None:
        self.path = Path(path)
        self.realtime = realtime
        self.loop = loop
        self._fps_override = fps
        self._cap: cv2.VideoCapture | None = None
        self._fps = fps if fps > 0 else 0.0
        self._size = (0, 0)
        self._index = 0
        self._pacer: Pacer | None = None


    def open(self) -> None:
        if self._cap is not None:
            return
        if not self.path.is_file():
            raise CameraError(f"camera source {str(self.path)!r}: no such video file")
        self._cap = self._open_capture()
        native = self._cap.get(cv2.CAP_PROP_FPS)
        if self._fps_override > 0:
            self._fps = self._fps_override
        elif math.isfinite(native) and 0 < native <= 1000:
            self._fps = float(native)
        else:
            self._fps = DEFAULT_FILE_FPS
        self._size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                      int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if self._pacer is None:
            self._pacer = Pacer(self._fps)
        self._pacer.reset()
        log.info("video file opened", extra={"path": str(self.path), "fps": self._fps,
                                             "width": self._size[0], "height": self._size[1],
                                             "realtime": self.realtime, "loop": self.loop})

    def _open_capture(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"camera source {str(self.path)!r}: not a video OpenCV can decode")
        return cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise CameraError(f"camera source {str(self.path)!r}: read() before open()")
        ok, pixels = self._cap.read()
        if not ok and self.loop:
            # Reopening is more reliable than seeking to frame 0 across containers and codecs.
            self._cap.release()
            self._cap = self._open_capture()
            ok, pixels = self._cap.read()
        if not ok or pixels is None:
            return None  # end of the clip (or an empty clip, even with loop)
        if self.realtime and self._pacer is not None:
            self._pacer.wait()
        frame = Frame(pixels=to_bgr(pixels, str(self.path)), index=self._index,
                      t_capture=time.monotonic(), t_wall=time.time())
        self._index += 1
        return frame

    def interrupt(self) -> None:
        """Safe from another thread: cuts a pacing wait short so a stop is quick."""
        if self._pacer is not None:
            self._pacer.interrupt()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


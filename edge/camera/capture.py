"""Live OpenCV captures: V4L2 devices, RTSP/HTTP streams and GStreamer pipelines.

These have no end: a failed open or read means the camera is gone for now (unplugged, rebooting,
network down), so both raise ``CameraUnavailable`` and the capture thread retries.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Literal

import cv2

from edge.camera.convert import to_bgr
from edge.camera.errors import CameraError, CameraUnavailable
from edge.camera.frame import Frame, SourceGeometry

log = logging.getLogger(__name__)

CaptureKind = Literal["device", "stream", "gstreamer"]


def gstreamer_available() -> bool:
    """PyPI's opencv-python wheels are built without GStreamer; JetPack's OpenCV has it."""
    try:
        return bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))
    except (AttributeError, cv2.error):  # pragma: no cover - very old OpenCV
        return "GStreamer:                   YES" in cv2.getBuildInformation()


class OpenCVCaptureSource(SourceGeometry):
    """One ``cv2.VideoCapture`` on a device path or index, a stream URL or a pipeline string.

    For a device, the requested width, height and fps are set through ``CAP_PROP_*``; the camera
    may pick the nearest mode it has, so ``size`` and ``fps`` report what it actually delivers.
    """

    def __init__(self, target: str | int, kind: CaptureKind, *, width: int = 0, height: int = 0,
                 fps: float = 0.0, redact: str | None = None) -> None:
        if kind == "gstreamer" and not gstreamer_available():
            raise CameraError("camera source is a GStreamer pipeline, but this OpenCV build has "
                              "no GStreamer support (use the distribution's python3-opencv, or a "
                              "device path / URL instead)")
        self.target = target
        self.kind = kind
        self.realtime = True
        self._want = (width, height, fps)
        # URLs may carry a password (rtsp://user:pw@host): never put that in a log line.
        self._name = redact if redact is not None else str(target)
        self._cap: cv2.VideoCapture | None = None
        self._fps = fps
        self._size = (width, height)
        self._index = 0


    def _backend(self) -> int:
        if self.kind == "gstreamer":
            return cv2.CAP_GSTREAMER
        if self.kind == "device" and sys.platform.startswith("linux"):
            return cv2.CAP_V4L2
        return cv2.CAP_ANY

    def open(self) -> None:
        if self._cap is not None:
            return
        cap = cv2.VideoCapture(self.target, self._backend())
        if not cap.isOpened():
            cap.release()
            raise CameraUnavailable(f"camera {self._name}: cannot open")
        width, height, fps = self._want
        if self.kind == "device":
            if width > 0:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height > 0:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if fps > 0:
                cap.set(cv2.CAP_PROP_FPS, fps)
        got_fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(got_fps) if math.isfinite(got_fps) and got_fps > 0 else fps
        self._size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                      int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._cap = cap
        if self.kind == "device" and ((width and self._size[0] != width)
                                      or (height and self._size[1] != height)):
            log.warning("camera mode differs from the requested one",
                        extra={"camera": self._name, "requested": f"{width}x{height}",
                               "actual": f"{self._size[0]}x{self._size[1]}"})
        log.info("camera opened", extra={"camera": self._name, "kind": self.kind,
                                         "fps": self._fps, "width": self._size[0],
                                         "height": self._size[1]})

    def read(self) -> Frame | None:
        if self._cap is None:
            raise CameraUnavailable(f"camera {self._name}: not open")
        ok, pixels = self._cap.read()
        if not ok or pixels is None:
            raise CameraUnavailable(f"camera {self._name}: no frame (disconnected?)")
        frame = Frame(pixels=to_bgr(pixels, self._name), index=self._index,
                      t_capture=time.monotonic(), t_wall=time.time())
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

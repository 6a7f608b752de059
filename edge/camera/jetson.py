"""NVIDIA's ``jetson_utils.videoSource``: CSI cameras and hardware video decoding on a Jetson.

Only importable on a Jetson with jetson-utils built; everywhere else the OpenCV sources are
used. Settings go in as the ``--input-*`` command-line words videoSource has always parsed,
because the ``options=`` dict only exists in recent jetson-utils releases while ``argv`` works
in all of them.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from edge.camera.errors import CameraError, CameraUnavailable
from edge.camera.frame import Frame, SourceGeometry

log = logging.getLogger(__name__)

#: Our ``[camera] jetson_options`` keys -> videoSource's command-line flag, and allowed values.
JETSON_OPTION_FLAGS: dict[str, str] = {
    "codec": "--input-codec",
    "flip": "--input-flip",
    "latency": "--input-rtsp-latency",
    "buffers": "--num-buffers",
}
JETSON_CODECS = frozenset({"h264", "h265", "vp8", "vp9", "mpeg2", "mpeg4", "mjpeg"})
JETSON_FLIPS = frozenset({"none", "counterclockwise", "rotate-180", "clockwise", "horizontal",
                          "vertical", "upper-right-diagonal", "upper-left-diagonal"})
#: What ``Capture`` is asked for, in order of preference (see ``JetsonSource``).
CAPTURE_FORMATS = ("bgr8", "rgb8")
#: How long one ``read()`` waits for a frame before the camera counts as lost.
READ_TIMEOUT_S = 5.0
_CAPTURE_TIMEOUT_MS = 1000


def import_jetson_utils() -> ModuleType | None:
    """The module under its current name, or its pre-2023 name ``jetson.utils``, or None."""
    for name in ("jetson_utils", "jetson.utils"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def parse_jetson_options(text: str) -> dict[str, str]:
    """``"codec=h264 flip=rotate-180"`` -> validated dict; anything else names the bad word."""
    where = "[camera] jetson_options"
    out: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        key = key.strip().lower()
        value = value.strip()
        if not sep or not value:
            raise CameraError(f"{where}: {word!r} is not key=value")
        if key not in JETSON_OPTION_FLAGS:
            raise CameraError(f"{where}: unknown option {key!r} "
                              f"(known: {', '.join(sorted(JETSON_OPTION_FLAGS))})")
        if key == "codec" and value.lower() not in JETSON_CODECS:
            raise CameraError(f"{where}: codec {value!r} is not one of "
                              f"{', '.join(sorted(JETSON_CODECS))}")
        if key == "flip" and value.lower() not in JETSON_FLIPS:
            raise CameraError(f"{where}: flip {value!r} is not one of "
                              f"{', '.join(sorted(JETSON_FLIPS))}")
        if key in ("latency", "buffers") and not (value.isdigit() and int(value) > 0):
            raise CameraError(f"{where}: {key} must be a positive integer, got {value!r}")
        out[key] = value.lower()
    return out


def jetson_argv(*, width: int = 0, height: int = 0, fps: float = 0.0, loop: bool = False,
                options: Mapping[str, str] | None = None) -> list[str]:
    """The ``argv`` list for ``videoSource(uri, argv=...)``.

    The first word stands for the program name: videoSource reads flags from every position but
    positional arguments only from index 1 on, so keeping a name there keeps that unambiguous.
    """
    argv = ["edge-face"]
    if width > 0:
        argv.append(f"--input-width={width}")
    if height > 0:
        argv.append(f"--input-height={height}")
    if fps > 0:
        argv.append(f"--input-rate={fps:g}")
    if loop:
        argv.append("--input-loop=-1")
    for key, value in (options or {}).items():
        argv.append(f"{JETSON_OPTION_FLAGS[key]}={value}")
    return argv


class JetsonSource(SourceGeometry):
    """Frames from ``jetson_utils.videoSource``, copied out of CUDA memory as BGR numpy arrays.

    videoSource converts the camera's NV12 on the GPU into the format ``Capture`` asks for, so
    it is asked for ``bgr8``, the pipeline's own order: the one copy left is the one out of its
    ring of buffers, which the next ``Capture`` overwrites. A jetson-utils release that refuses
    ``bgr8`` gets ``rgb8`` instead, and the RGB->BGR conversion makes that copy.
    """

    kind = "jetson"

    def __init__(self, uri: str, *, width: int = 0, height: int = 0, fps: float = 0.0,
                 loop: bool = False, options: Mapping[str, str] | None = None,
                 module: ModuleType | None = None, redact: str | None = None) -> None:
        self._ju = module if module is not None else import_jetson_utils()
        if self._ju is None:
            raise CameraError(f"camera source {redact or uri!r} needs jetson_utils "
                              "(jetson-utils from JetPack), which is not importable here")
        self.uri = uri
        self.realtime = True
        self.live = not uri.startswith("file://")
        self.argv = jetson_argv(width=width, height=height, fps=fps, loop=loop and not self.live,
                                options=options)
        self._name = redact or uri
        self._format = CAPTURE_FORMATS[0]
        self._src: Any = None
        self._fps = fps
        self._size = (width, height)
        self._index = 0

    def open(self) -> None:
        if self._src is not None:
            return
        try:
            src = self._ju.videoSource(self.uri, argv=self.argv)
            src.Open()
        except Exception as exc:  # jetson_utils raises the bare Exception type
            raise CameraUnavailable(f"camera {self._name}: cannot open ({exc})") from None
        self._src = src
        self._size = (int(src.GetWidth()), int(src.GetHeight()))
        self._fps = float(src.GetFrameRate()) or self._fps
        log.info("camera opened", extra={"camera": self._name, "kind": self.kind,
                                         "fps": self._fps, "width": self._size[0],
                                         "height": self._size[1]})

    def read(self) -> Frame | None:
        if self._src is None:
            raise CameraUnavailable(f"camera {self._name}: not open")
        deadline = time.monotonic() + READ_TIMEOUT_S
        while True:
            try:
                image = self._src.Capture(format=self._format, timeout=_CAPTURE_TIMEOUT_MS)
            except Exception as exc:
                if self._format != "rgb8" and "format" in str(exc).lower():
                    log.info("videoSource refuses bgr8; capturing rgb8 and converting",
                             extra={"camera": self._name, "error": str(exc)})
                    self._format = "rgb8"
                    continue
                # Older releases raise on a timeout too; only a stopped stream is an end.
                if not self._src.IsStreaming():
                    if self.live:
                        raise CameraUnavailable(f"camera {self._name}: stream stopped") from None
                    return None
                image = None
            if image is not None:
                break
            if time.monotonic() > deadline:
                raise CameraUnavailable(f"camera {self._name}: no frame for {READ_TIMEOUT_S:g} s")
        self._ju.cudaDeviceSynchronize()
        mapped = np.asarray(self._ju.cudaToNumpy(image))  # a view of the ring buffer
        pixels = (np.array(mapped, copy=True) if self._format == "bgr8"
                  else cv2.cvtColor(mapped, cv2.COLOR_RGB2BGR))
        frame = Frame(pixels=pixels, index=self._index,
                      t_capture=time.monotonic(), t_wall=time.time())
        self._index += 1
        return frame

    def close(self) -> None:
        if self._src is not None:
            try:
                self._src.Close()
            except Exception as exc:  # closing a dead stream must not stop a reconnect
                log.debug("videoSource.Close failed", extra={"camera": self._name,
                                                            "error": str(exc)})
            self._src = None

"""``[camera] source`` -> the right ``FrameSource``.

One string covers every camera so an installer can write ``EDGE_FACE_CAMERA__SOURCE=...`` and
nothing else. The forms, checked in this order:

* ``none``                             no camera
* ``opencv:<src>`` / ``jetson:<src>``  force a backend for the rest of the string
* a string containing ``!``            GStreamer pipeline through OpenCV
* ``csi://N``                          jetson_utils only
* ``v4l2://``, ``file://``, ``rtp://``   jetson_utils if importable, else OpenCV (not rtp)
* ``rtsp://``, ``rtsps://``            jetson_utils if importable (hardware decode), else OpenCV
* ``http://``, ``https://``            OpenCV (MJPEG/HLS cameras)
* ``/dev/videoN``, a bare integer      jetson_utils if importable, else OpenCV V4L2
* an existing directory / file         image directory / video file
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

from edge.camera.capture import CaptureKind, OpenCVCaptureSource
from edge.camera.errors import CameraError
from edge.camera.frame import FrameSource
from edge.camera.image_dir import ImageDirSource
from edge.camera.jetson import JetsonSource, import_jetson_utils, parse_jetson_options
from edge.camera.null import NullSource
from edge.camera.video_file import VideoFileSource
from edge.config import CameraConfig

_DEVICE_RE = re.compile(r"^/dev/video\d+$")
_FORMS = ("none, a video file, an image directory, /dev/videoN, a device index, "
          "rtsp:// http(s):// URLs, csi://N, v4l2://, file://, or a GStreamer pipeline with '!'")


@dataclass(frozen=True)
class SourceSpec:
    """What a source string means, before anything is opened (for logs and ``config check``)."""

    kind: str  # "none", "file", "images", "device", "stream", "gstreamer", "jetson"
    target: str | int  # path, URL, pipeline or device index, as the backend wants it
    display: str  # ``target`` with any password in a URL masked


def redact_url(url: str) -> str:
    """``rtsp://user:secret@cam/stream`` -> ``rtsp://user:***@cam/stream`` for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_source(source: str, *, jetson: ModuleType | None = None) -> SourceSpec:
    """Classify ``source``; ``jetson`` is the jetson_utils module if importable (else None)."""
    text = source.strip()
    if not text:
        raise CameraError(f"[camera] source is empty (expected one of: {_FORMS})")
    if text.lower() == "none":
        return SourceSpec("none", "none", "none")
    forced: str | None = None
    for prefix in ("opencv:", "jetson:"):
        if text.lower().startswith(prefix):
            forced, text = prefix[:-1], text[len(prefix):].strip()
            break
    display = redact_url(text) if "://" in text else text
    if forced == "jetson":
        if jetson is None:
            raise CameraError(f"[camera] source {source!r}: jetson: needs jetson_utils, "
                              "which is not importable here")
        return SourceSpec("jetson", text, display)
    use_jetson = jetson is not None and forced is None

    if "!" in text:
        return SourceSpec("gstreamer", text, display)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme == "csi":
        if not use_jetson:
            why = "was forced to OpenCV" if forced else "jetson_utils is not importable here"
            raise CameraError(f"[camera] source {source!r}: csi:// cameras are read through "
                              f"jetson_utils (JetPack's jetson-utils), but {why}")
        return SourceSpec("jetson", text, display)
    if scheme in ("v4l2", "file", "rtp"):
        if use_jetson:
            return SourceSpec("jetson", text, display)
        rest = text.split("://", 1)[1]
        if scheme == "v4l2":
            return _device_spec(rest, source)
        if scheme == "file":
            return _path_spec(rest, source)
        raise CameraError(f"[camera] source {source!r}: rtp:// needs jetson_utils; with OpenCV "
                          "use an RTSP URL or a GStreamer pipeline")
    if scheme in ("rtsp", "rtsps"):
        return SourceSpec("jetson" if use_jetson else "stream", text, display)
    if scheme in ("http", "https"):
        return SourceSpec("stream", text, display)
    if scheme:
        raise CameraError(f"[camera] source {display!r}: unknown scheme {scheme}:// "
                          f"(expected one of: {_FORMS})")
    if _DEVICE_RE.match(text) or text.isdigit():
        if use_jetson:
            return SourceSpec("jetson", f"/dev/video{text}" if text.isdigit() else text, display)
        return _device_spec(text, source)
    return _path_spec(text, source)


def _device_spec(text: str, source: str) -> SourceSpec:
    if text.isdigit():
        return SourceSpec("device", int(text), text)
    if _DEVICE_RE.match(text):
        # A missing /dev/videoN is not an error: USB cameras appear after boot. It is retried.
        return SourceSpec("device", text, text)
    raise CameraError(f"[camera] source {source!r}: {text!r} is not /dev/videoN or an index")


def _path_spec(text: str, source: str) -> SourceSpec:
    path = Path(text).expanduser()
    if path.is_dir():
        return SourceSpec("images", str(path), str(path))
    if path.is_file():
        return SourceSpec("file", str(path), str(path))
    if path.exists():
        raise CameraError(f"[camera] source {source!r}: neither a file nor a directory")
    raise CameraError(f"[camera] source {source!r}: no such file or directory "
                      f"(expected one of: {_FORMS})")


def make_source(config: CameraConfig, *, jetson: ModuleType | None = None,
                detect_jetson: bool = True) -> FrameSource:
    """Build the source without opening it (the capture thread opens, and reopens, it).

    Everything that can be known to be wrong without touching a camera (a bad string, a missing
    clip, an unknown jetson option) raises ``CameraError`` here, so start-up stops with it.
    """
    module = jetson if jetson is not None else (import_jetson_utils() if detect_jetson else None)
    spec = parse_source(config.source, jetson=module)
    options = parse_jetson_options(config.jetson_options)
    if options and spec.kind != "jetson":
        raise CameraError("[camera] jetson_options is set, but source "
                          f"{spec.display!r} is not read through jetson_utils")
    if spec.kind == "none":
        return NullSource()
    if spec.kind == "file":
        return VideoFileSource(str(spec.target), realtime=config.realtime, loop=config.loop,
                               fps=config.fps)
    if spec.kind == "images":
        return ImageDirSource(str(spec.target), realtime=config.realtime, loop=config.loop,
                              fps=config.fps)
    if spec.kind == "jetson":
        return JetsonSource(str(spec.target), width=config.width, height=config.height,
                            fps=config.fps, loop=config.loop, options=options, module=module,
                            redact=spec.display)
    kind: CaptureKind = "device" if spec.kind == "device" else (
        "gstreamer" if spec.kind == "gstreamer" else "stream")
    return OpenCVCaptureSource(spec.target, kind, width=config.width, height=config.height,
                               fps=config.fps, redact=spec.display)


def open_source(config: CameraConfig, *, jetson: ModuleType | None = None,
                detect_jetson: bool = True) -> FrameSource:
    """``make_source`` and ``open()`` now: for tools that want a frame at once (enrollment).

    A live camera that cannot be opened raises ``CameraUnavailable``; the daemon uses
    ``make_source`` with ``LatestFrameReader`` instead, which retries it.
    """
    source = make_source(config, jetson=jetson, detect_jetson=detect_jetson)
    source.open()
    return source

"""Camera sources behind one interface, and the thread that keeps the freshest frame.

The daemon does ``make_source(config.camera)`` then ``LatestFrameReader(source).start()`` and
``get()``; see ``docs/camera.md`` for the source strings and the reconnect behaviour.
"""

from __future__ import annotations

from edge.camera.capture import OpenCVCaptureSource, gstreamer_available
from edge.camera.errors import CameraError, CameraUnavailable
from edge.camera.factory import SourceSpec, make_source, open_source, parse_source, redact_url
from edge.camera.frame import Frame, FrameSource
from edge.camera.image_dir import ImageDirSource
from edge.camera.jetson import JetsonSource, jetson_argv, parse_jetson_options
from edge.camera.null import NullSource
from edge.camera.reader import LatestFrameReader, ReaderStats, backoff_delay
from edge.camera.video_file import VideoFileSource

__all__ = [
    "CameraError",
    "CameraUnavailable",
    "Frame",
    "FrameSource",
    "ImageDirSource",
    "JetsonSource",
    "LatestFrameReader",
    "NullSource",
    "OpenCVCaptureSource",
    "ReaderStats",
    "SourceSpec",
    "VideoFileSource",
    "backoff_delay",
    "gstreamer_available",
    "jetson_argv",
    "make_source",
    "open_source",
    "parse_jetson_options",
    "parse_source",
    "redact_url",
]

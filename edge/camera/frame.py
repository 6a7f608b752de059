"""The one shape every camera source has, so the pipeline never knows which camera it reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured picture and when it was taken.

    ``t_capture`` is ``time.monotonic()`` right after the source handed the frame over: latency
    from the face's first frame to its event is measured from it, and a monotonic clock does not
    jump when NTP corrects the wall clock. ``t_wall`` (``time.time()``) is only for event payloads.
    """

    pixels: np.ndarray  # H x W x 3, uint8, BGR (OpenCV's order, what the detector expects)
    index: int  # counts up for the life of the source, across loops and reconnects
    t_capture: float
    t_wall: float


@runtime_checkable
class FrameSource(Protocol):
    """A camera, stream, clip or image folder.

    ``open()`` is idempotent and may be called again after ``close()`` (that is how a lost camera
    is reopened). ``read()`` returns ``None`` only at a real end of stream (a clip without
    ``loop``); a live source that stops delivering raises ``CameraUnavailable`` instead.
    """

    #: "file", "images", "device", "stream", "gstreamer", "jetson" or "none".
    kind: str
    #: False for clips and image folders replayed as fast as possible: every frame matters there.
    realtime: bool

    def open(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...

    @property
    def fps(self) -> float: ...

    @property
    def size(self) -> tuple[int, int]:
        """(width, height); (0, 0) while unknown."""
        ...


class SourceGeometry:
    """The ``fps`` and ``size`` every concrete source reports, updated once it has opened.

    Sources set ``_fps`` and ``_size`` from what they were asked for, then from what the device,
    stream or file actually delivers.
    """

    _fps: float = 0.0
    _size: tuple[int, int] = (0, 0)

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def size(self) -> tuple[int, int]:
        return self._size

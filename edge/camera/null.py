"""``source = "none"``: an enrollment station has an admin API and a gallery but no camera."""

from __future__ import annotations

from edge.camera.frame import Frame


class NullSource:
    """Opens, yields nothing (end of stream at once) and closes; the daemon checks ``kind``."""

    kind = "none"
    realtime = True

    @property
    def fps(self) -> float:
        return 0.0

    @property
    def size(self) -> tuple[int, int]:
        return (0, 0)

    def open(self) -> None:
        return None

    def read(self) -> Frame | None:
        return None

    def close(self) -> None:
        return None

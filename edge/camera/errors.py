"""Camera failures, split by what the daemon should do about them.

A misspelt source or a missing clip will not fix itself, so it stops start-up; an unplugged USB
camera or an RTSP server that reboots will, so the capture thread retries it forever.
"""

from __future__ import annotations

from edge.errors import EdgeError


class CameraError(EdgeError):
    """A camera source that cannot be used as configured (bad source string, missing file)."""

    exit_code = 66  # EX_NOINPUT


class CameraUnavailable(CameraError):
    """A live source that failed to open or stopped delivering; worth retrying later."""

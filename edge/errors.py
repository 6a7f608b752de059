"""Errors that reach a user carry a message meant for that user.

Every failure the CLI, the daemon or the API reports is an ``EdgeError``; anything else is a bug
and is reported with a traceback.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every expected failure; ``str(exc)`` is shown to the user as is."""

    #: Process exit code when this error ends a CLI command.
    exit_code = 1


class ConfigError(EdgeError):
    """A wrong key or value in the config file or an ``EDGE_FACE_*`` variable."""

    exit_code = 78  # EX_CONFIG: systemd does not restart-loop on it with RestartPreventExitStatus


class ImageError(EdgeError):
    """An input image that cannot be used (unreadable, corrupt, truncated, too large)."""


class ImageTooLargeError(ImageError):
    """Over the byte or pixel limit; refused before decoding (the API answers 413)."""


class ImageFormatError(ImageError):
    """Not an image, or not a supported format, judged from the bytes (the API answers 415)."""


class ModelError(EdgeError):
    """A model file that is missing, not prepared, or does not match its manifest."""


class BackendError(EdgeError):
    """An inference backend that cannot be loaded on this machine."""

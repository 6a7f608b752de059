"""Errors of the gallery store, each one a message an operator can act on.

They subclass ``EdgeError`` so the CLI prints them as one line and the admin API can map them to
HTTP statuses by class (not found, conflict, bad request, server fault) without parsing text.
"""

from __future__ import annotations

from edge.errors import EdgeError


class GalleryError(EdgeError):
    """Base of every expected gallery failure."""


class GalleryInputError(GalleryError):
    """A value given by the caller is unusable (bad vector, bad time, empty purpose, ...)."""


class PersonNotFound(GalleryError):
    """No person with that id; ids are random, so a typo never lands on someone else."""


class TemplateNotFound(GalleryError):
    """The person holds no template with that id (already removed, or another person's)."""


class ConsentError(GalleryError):
    """The person has no consent that is valid now: no template may be added."""

    @classmethod
    def no_valid_consent(cls, person_id: str, status: str) -> ConsentError:
        return cls(f"person {person_id} has no valid consent ({status}); record a new consent "
                   "before adding templates")


class GalleryKeyError(GalleryError):
    """The template key is missing, unsafe, or not the key the database was encrypted with."""


class GalleryCorruptError(GalleryError):
    """The database file is damaged, truncated, or not a gallery database."""


class GalleryFullError(GalleryError):
    """The disk filled up during a write; the transaction was rolled back, nothing was written."""


class DeviceKeyMissing(GalleryError):
    """An operation needs a key this device does not hold (e.g. the operator's signing key)."""


class BundleError(GalleryError):
    """A fleet bundle that must not be imported (bad signature, tampered, stale, future)."""

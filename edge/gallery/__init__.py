"""The gallery: consented persons, encrypted templates, audit log, erasure, fleet bundles.

Entry points: ``GalleryStore`` (the store itself) and, above it, ``edge.service.GalleryService``
which the CLI and the admin API share. ``docs/gallery.md`` explains the design.
"""

from __future__ import annotations

from edge.gallery.errors import (
    BundleError,
    ConsentError,
    GalleryCorruptError,
    GalleryError,
    GalleryFullError,
    GalleryInputError,
    GalleryKeyError,
    PersonNotFound,
)
from edge.gallery.records import ConsentInput, NewTemplate, TemplateMatrix
from edge.gallery.store import GalleryStore
from edge.gallery.sweeper import ConsentSweeper

__all__ = [
    "BundleError",
    "ConsentError",
    "ConsentInput",
    "ConsentSweeper",
    "GalleryCorruptError",
    "GalleryError",
    "GalleryFullError",
    "GalleryInputError",
    "GalleryKeyError",
    "GalleryStore",
    "NewTemplate",
    "PersonNotFound",
    "TemplateMatrix",
]

"""edge-face: consent-first face recognition for doors and kiosks."""

from __future__ import annotations

__version__ = "0.1.0"

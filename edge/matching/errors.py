"""Errors of the in-memory matcher, each naming what was wrong with the input."""

from __future__ import annotations

from edge.errors import EdgeError


class MatcherError(EdgeError):
    """A request the matcher cannot serve; the matrix is left exactly as it was."""


class VectorError(MatcherError):
    """A template or probe vector of the wrong shape, type, length or value (NaN, inf, zero)."""


class TemplateIdError(MatcherError):
    """A template or person id that is empty, not a string, duplicated or unknown."""

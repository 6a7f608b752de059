"""1:N matching of face templates against the on-device gallery (issue 3, "Matcher")."""

from __future__ import annotations

from edge.matching.errors import MatcherError, TemplateIdError, VectorError
from edge.matching.matcher import INT8_MIN_ROWS, Matcher
from edge.matching.results import Decision, MatchResult, PersonScore, decide

__all__ = [
    "INT8_MIN_ROWS",
    "Decision",
    "MatchResult",
    "Matcher",
    "MatcherError",
    "PersonScore",
    "TemplateIdError",
    "VectorError",
    "decide",
]

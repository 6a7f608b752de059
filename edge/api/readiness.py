"""What ``/readyz`` reports; kept free of FastAPI so the daemon can build it without the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Readiness:
    """Each check is ``ok``, ``none`` (not configured) or why it is not; ready = no reasons."""

    checks: dict[str, str]
    reasons: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "checks": self.checks, "reasons": self.reasons}

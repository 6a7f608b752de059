"""What a search returns, and the open-set rule that turns scores into a decision.

The rule lives here, apart from the scan, so that the CLI, the daemon and the duplicate check
all decide the same way from the same two numbers.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from edge.config import MatchingConfig

Decision = Literal["match", "unknown"]


class PersonScore(NamedTuple):
    """One person's score: the best cosine similarity over that person's templates."""

    person_id: str
    template_id: str
    similarity: float


class MatchResult(NamedTuple):
    """The answer for one probe (a NamedTuple: cheap to build at thousands of probes a second).

    ``person_id`` is the best candidate even when the decision is ``unknown`` (the decision
    layer may want to log how close it came); ``matched_person_id`` is what may leave the
    device. Both are ``None`` only for an empty gallery.
    """

    person_id: str | None
    template_id: str | None
    similarity: float | None
    second_person_id: str | None
    second_similarity: float | None
    decision: Decision

    @property
    def matched_person_id(self) -> str | None:
        return self.person_id if self.decision == "match" else None


def decide(best: PersonScore | None, second: PersonScore | None,
           config: MatchingConfig) -> MatchResult:
    """Match only when the best person is both close enough and clearly ahead of the next.

    The margin guards against look-alikes (twins, siblings, a second template enrolled under a
    wrong id): two persons nearly tied means the device cannot tell who it is, so it says so.
    A gallery with a single person has no runner-up, and the margin is then met.
    """
    if best is None:
        return MatchResult(None, None, None, None, None, "unknown")
    second_sim = second.similarity if second is not None else None
    ok = best.similarity >= config.threshold and (
        second_sim is None or best.similarity - second_sim >= config.margin
    )
    return MatchResult(
        person_id=best.person_id,
        template_id=best.template_id,
        similarity=best.similarity,
        second_person_id=second.person_id if second is not None else None,
        second_similarity=second_sim,
        decision="match" if ok else "unknown",
    )

"""``/v1/events``: the events this daemon queued lately, for a live view such as ``/ui``.

A poll, not a stream: the page asks every few seconds with the ``next_after`` it was given.
The feed is the daemon's in-memory window (``edge.events.recent``): ids, decisions and numbers,
never a label, a picture or a template. MQTT stays the way to consume events reliably; this
feed forgets on restart and drops what a slow poller missed (and says so with ``truncated``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, Field

from edge.api.auth import require
from edge.api.errors import ApiError
from edge.api.schemas import Problem
from edge.events.recent import DEFAULT_CAPACITY, RecentEvents

router = APIRouter(prefix="/v1", tags=["device"])
STATE_KEY = "recent_events"


class EventSummary(BaseModel):
    seq: int = Field(description="the event's place in this device's queue; only grows")
    event_id: str
    type: Literal["recognized", "unknown", "camera"]
    time: str
    camera_id: str
    track_id: int | None = None
    person_id: str | None = Field(None, description="pseudonymous id; null for unknown faces")
    similarity: float | None = None
    decision: str | None = None
    votes: int | None = None
    latency_ms: float | None = None
    state: str | None = Field(None, description="camera events: open, lost, reopened")
    attempts: int | None = None


class EventFeed(BaseModel):
    model_config = {"json_schema_extra": {"examples": [{
        "events": [{"seq": 41, "event_id": "01JEB7Q3W4K8ZQ2N5V6X7Y8Z9A", "type": "recognized",
                    "time": "2026-12-04T09:30:00.123Z", "camera_id": "cam0", "track_id": 7,
                    "person_id": "p_pgbkuke2szxhhzqn5votyurt5i", "similarity": 0.71,
                    "decision": "votes", "votes": 2, "latency_ms": 180.5}],
        "next_after": 41, "truncated": False}]}}
    events: list[EventSummary] = Field(description="oldest first")
    next_after: int = Field(description="pass as ?after= on the next poll")
    truncated: bool = Field(description="older events after ?after= were left out (limit)")


def attach(app: FastAPI, recent: RecentEvents) -> None:
    """Give ``app`` the daemon's window of recent events (the daemon calls this)."""
    setattr(app.state, STATE_KEY, recent)


def _recent(request: Request) -> RecentEvents:
    recent: RecentEvents | None = getattr(request.app.state, STATE_KEY, None)
    if recent is None:
        raise ApiError(503, "this API is not attached to a daemon's event feed")
    return recent


@router.get("/events", response_model=EventFeed, summary="Recent events (a live view; MQTT is "
            "the reliable way to consume them)",
            responses={503: {"model": Problem, "description": "no event feed in this process"}},
            dependencies=[Depends(require("read"))])
def recent_events(after: int = Query(0, ge=0, le=2**62,
                                     description="next_after of the previous poll"),
                  limit: int = Query(50, ge=1, le=DEFAULT_CAPACITY),
                  recent: RecentEvents = Depends(_recent)) -> dict[str, Any]:
    events, truncated = recent.after(after, limit)
    next_after = events[-1]["seq"] if events else after
    return {"events": events, "next_after": next_after, "truncated": truncated}

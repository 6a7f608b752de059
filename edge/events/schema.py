"""Event and status payloads: the only data that ever leaves the device.

Why builders instead of ``json.dumps(anything)``: the privacy promise is "no frames, crops or
templates in MQTT", and the cheapest way to keep it is to make it impossible to express. Every
payload is a flat object of JSON scalars (string, number, boolean, null) with a size cap, so an
embedding (a list of floats), an image (bytes) or a nested blob cannot be smuggled in by a later
change without this module refusing it. ``docs/events.schema.json`` states the same contract for
consumers and is checked against these builders in the tests.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import secrets
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from edge.errors import EdgeError

#: Version tag of identity and camera events; bump the number on an incompatible change.
EVENT_SCHEMA = "edge-face/event/1"
#: Version tag of the retained ``status`` payloads.
STATUS_SCHEMA = "edge-face/status/1"
#: Hard cap on an encoded payload; real ones are 90-300 bytes.
MAX_PAYLOAD_BYTES = 1024
#: Longest string accepted in any field (ids, labels, model ids).
MAX_STRING = 128

EventType = Literal["recognized", "unknown", "camera"]
EVENT_TYPES: tuple[str, ...] = ("recognized", "unknown", "camera")
CameraState = Literal["open", "lost", "reopened"]
CAMERA_STATES: tuple[str, ...] = ("open", "lost", "reopened")
OfflineReason = Literal["will", "shutdown"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECISION_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class EventSchemaError(EdgeError):
    """A payload that would break the event contract (non-scalar value, too large, bad field)."""


def new_event_id(now: float | None = None) -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, 26 Crockford base32 characters.

    Why not a plain UUID4: a ULID sorts by creation time, which makes a consumer's dedupe table
    easy to expire, and it is still unique without any coordination between devices.
    """
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | int.from_bytes(secrets.token_bytes(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def rfc3339_utc(now: float | None = None) -> str:
    """Wall-clock time as RFC 3339 in UTC with milliseconds, e.g. ``2025-01-31T12:00:00.123Z``."""
    ts = time.time() if now is None else now
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _scalar(key: str, value: Any) -> str | int | float | bool | None:
    """Return ``value`` as a plain JSON scalar or refuse it, naming the field."""
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise EventSchemaError(f"event field {key!r}: string longer than {MAX_STRING} chars")
        return value
    # numpy scalars register with the numbers ABCs; numpy arrays and lists do not.
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        as_float = float(value)
        if not math.isfinite(as_float):
            raise EventSchemaError(f"event field {key!r}: {as_float} is not a finite number")
        return as_float
    raise EventSchemaError(
        f"event field {key!r}: {type(value).__name__} is not a JSON scalar "
        "(events carry no arrays, bytes or objects — never a template or an image)"
    )


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a flat payload; refuses non-scalars and anything over 1 KB."""
    if not isinstance(payload, Mapping):
        raise EventSchemaError(f"event payload must be a mapping, got {type(payload).__name__}")
    flat = {str(k): _scalar(str(k), v) for k, v in payload.items()}
    data = json.dumps(flat, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    raw = data.encode("utf-8")
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise EventSchemaError(
            f"event payload is {len(raw)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit"
        )
    return raw


def _id(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise EventSchemaError(f"event field {key!r}: expected a non-empty string, got {value!r}")
    return value


def _count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise EventSchemaError(f"event field {key!r}: expected an integer >= 0, got {value!r}")
    return int(value)


def _base(event_type: str, device_id: str, camera_id: str, event_id: str | None,
          now: float | None) -> dict[str, Any]:
    return {
        "schema": EVENT_SCHEMA,
        "event_id": _id("event_id", event_id) if event_id is not None else new_event_id(now),
        "type": event_type,
        "device_id": _id("device_id", device_id),
        "camera_id": _id("camera_id", camera_id),
        "time": rfc3339_utc(now),
    }


def identity_event(
    event_type: Literal["recognized", "unknown"],
    *,
    device_id: str,
    camera_id: str,
    track_id: int,
    person_id: str | None,
    similarity: float | None,
    decision: str,
    votes: int,
    latency_ms: float,
    label: str | None = None,
    include_label: bool = False,
    event_id: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """One decision about one track.

    ``label`` is the enrolled person's display name; it is written only when the operator set
    ``[events] include_label = true`` (privacy principle 7) and never for ``unknown`` — a stranger
    has no name, and passing one is a bug this refuses loudly. ``latency_ms`` is monotonic time
    from the face's first frame to the decision.
    """
    if event_type not in ("recognized", "unknown"):
        raise EventSchemaError(f"identity event type must be recognized or unknown: {event_type!r}")
    payload = _base(event_type, device_id, camera_id, event_id, now)
    payload["track_id"] = _count("track_id", track_id)
    if event_type == "recognized":
        payload["person_id"] = _id("person_id", person_id)
    else:
        if person_id is not None or label is not None:
            raise EventSchemaError("an unknown event carries no person_id and no label")
        payload["person_id"] = None
    if include_label and event_type == "recognized":
        payload["label"] = _id("label", label)
    sim = _scalar("similarity", similarity)
    if sim is not None and (isinstance(sim, (bool, str)) or not -1.0 <= sim <= 1.0):
        raise EventSchemaError(f"event field 'similarity': expected -1..1 or null, got {sim!r}")
    payload["similarity"] = None if sim is None else round(float(sim), 4)
    if not isinstance(decision, str) or not _DECISION_RE.match(decision):
        raise EventSchemaError(
            f"event field 'decision': expected a short lowercase token, got {decision!r}"
        )
    payload["decision"] = decision
    payload["votes"] = _count("votes", votes)
    lat = _scalar("latency_ms", latency_ms)
    if lat is None or isinstance(lat, (bool, str)) or lat < 0:
        raise EventSchemaError(f"event field 'latency_ms': expected a number >= 0, got {lat!r}")
    payload["latency_ms"] = round(float(lat), 1)
    encode(payload)  # size and scalar check now, not at publish time
    return payload


def recognized_event(**fields: Any) -> dict[str, Any]:
    """``identity_event("recognized", ...)``: an enrolled person passed."""
    return identity_event("recognized", **fields)


def unknown_event(**fields: Any) -> dict[str, Any]:
    """``identity_event("unknown", person_id=None, ...)``: a face that matched nobody."""
    fields.setdefault("person_id", None)
    return identity_event("unknown", **fields)


def camera_event(*, device_id: str, camera_id: str, state: CameraState, attempts: int,
                 event_id: str | None = None, now: float | None = None) -> dict[str, Any]:
    """Camera opened, lost, or reopened after ``attempts`` retries.

    The camera's source URI is deliberately absent: RTSP URIs often carry credentials.
    """
    if state not in CAMERA_STATES:
        raise EventSchemaError(f"camera state must be one of {CAMERA_STATES}, got {state!r}")
    payload = _base("camera", device_id, camera_id, event_id, now)
    payload["state"] = state
    payload["attempts"] = _count("attempts", attempts)
    encode(payload)
    return payload


def status_online(*, device_id: str, version: str, backend: str, detector_model: str,
                  embedder_model: str, now: float | None = None) -> dict[str, Any]:
    """Retained ``online`` status: which software and models answer on this device."""
    payload: dict[str, Any] = {
        "schema": STATUS_SCHEMA,
        "state": "online",
        "device_id": _id("device_id", device_id),
        "time": rfc3339_utc(now),
        "version": _id("version", version),
        "backend": _id("backend", backend),
        "detector_model": _id("detector_model", detector_model),
        "embedder_model": _id("embedder_model", embedder_model),
    }
    encode(payload)
    return payload


def status_offline(*, device_id: str, reason: OfflineReason,
                   now: float | None = None) -> dict[str, Any]:
    """Retained ``offline`` status.

    The Last Will (``reason="will"``) is handed to the broker at connect time, so a timestamp in
    it would be the connect time, not the time of death: it has none; a clean shutdown has one.
    """
    if reason not in ("will", "shutdown"):
        raise EventSchemaError(f"offline reason must be 'will' or 'shutdown', got {reason!r}")
    payload: dict[str, Any] = {
        "schema": STATUS_SCHEMA,
        "state": "offline",
        "device_id": _id("device_id", device_id),
        "reason": reason,
    }
    if reason == "shutdown":
        payload["time"] = rfc3339_utc(now)
    encode(payload)
    return payload

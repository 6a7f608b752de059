"""MQTT topic names, the one interface every subscriber hard-codes.

``<prefix>/<device_id>/status`` (retained) and ``<prefix>/<device_id>/events/<type>``. A device id
with ``/``, ``+`` or ``#`` would silently move a device's events into another topic tree or make
the topic unpublishable, so both parts are checked here and the message names the config key.
"""

from __future__ import annotations

from edge.errors import EdgeError
from edge.events.schema import EVENT_TYPES


class TopicError(EdgeError):
    """A device id or topic prefix that cannot be part of an MQTT topic."""


def _check_segment(value: str, what: str) -> str:
    if not value or any(c in value for c in "/+#\x00") or value != value.strip():
        raise TopicError(
            f"{what} {value!r} cannot be used in an MQTT topic "
            "(must be non-empty, without '/', '+', '#', NUL or surrounding spaces)"
        )
    return value


def _check_prefix(prefix: str) -> str:
    parts = prefix.split("/")
    for part in parts:
        _check_segment(part, "[mqtt] topic_prefix segment")
    return prefix


def status_topic(prefix: str, device_id: str) -> str:
    """Retained online/offline topic of one device."""
    return f"{_check_prefix(prefix)}/{_check_segment(device_id, '[device] id')}/status"


def event_topic(prefix: str, device_id: str, event_type: str) -> str:
    """Topic of one event type (recognized, unknown, camera)."""
    if event_type not in EVENT_TYPES:
        raise TopicError(f"unknown event type {event_type!r} (known: {', '.join(EVENT_TYPES)})")
    return f"{_check_prefix(prefix)}/{_check_segment(device_id, '[device] id')}/events/{event_type}"

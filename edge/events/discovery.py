"""Home Assistant MQTT discovery: the device shows up in Home Assistant with no YAML at all.

Why static configs: a discovery config only tells Home Assistant which of the device's own topics
to read and how; it never carries data. So these payloads are built from the config alone (no
gallery access, no event data): they cannot name a person, known or not, and no entity is of a
kind that shows pictures (``camera``, ``image``). What Home Assistant then reads are the same
events every other consumer gets, with ``label`` only when ``[events] include_label = true``.

Entities (one config topic each, ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``,
retained, so Home Assistant finds them after its own restart):

- ``binary_sensor`` *Online*: connectivity, from the retained status topic (the Last Will makes
  it go off when the device vanishes). It has no availability of its own, so it can show "off".
- ``sensor`` *Last recognized*: the person id of the last ``recognized`` event (its label, when
  labels are sent), the event's fields as attributes.
- ``event`` *Unknown face*: fires on each ``unknown`` event (similarity, camera, time as
  attributes; there is no identity in an unknown event to show).
- ``sensor`` *Camera*: ``open``, ``lost`` or ``reopened``, from the camera events.

Every entity but *Online* is available exactly while the retained status says ``online``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge import __version__
from edge.config import Config
from edge.events.schema import CAMERA_STATES
from edge.events.topics import event_topic, status_topic

#: Home Assistant's discovery topic components allow only these characters in node and object ids.
_NODE_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
#: Entity kinds that would show or carry pictures; never published.
PICTURE_COMPONENTS = frozenset({"camera", "image"})
_STATE = "{{ value_json.state }}"


@dataclass(frozen=True)
class DiscoveryMessage:
    """One retained message: a config, or an empty payload that removes the entity."""

    topic: str
    payload: bytes
    component: str
    object_id: str

    def config(self) -> dict[str, Any]:
        return json.loads(self.payload) if self.payload else {}


def node_id(device_id: str) -> str:
    """The device id made safe for a discovery topic, one node per device id.

    A safe id is kept as it is (``door-1`` -> ``edge-face_door-1``). An id that had to change
    gets a short digest of the original (``door.1`` -> ``edge-face_door_1_<8 hex>``): without
    it ``door.1`` and ``door_1`` in one fleet would be one Home Assistant device, each
    overwriting the other's entities.
    """
    safe = _NODE_ID_UNSAFE.sub("_", device_id)
    if safe != device_id:
        safe += "_" + hashlib.sha256(device_id.encode()).hexdigest()[:8]
    return "edge-face_" + safe


def _last_recognized_template(include_label: bool) -> str:
    # Only when labels are sent at all may Home Assistant show one; otherwise the template
    # does not even mention the field.
    if include_label:
        return "{{ value_json.get('label') or value_json.person_id }}"
    return "{{ value_json.person_id }}"


def entity_configs(config: Config) -> list[tuple[str, str, dict[str, Any]]]:
    """``(component, object_id, config)`` for each entity of this device."""
    mqtt, device_id = config.mqtt, config.device.id
    node = node_id(device_id)
    status = status_topic(mqtt.topic_prefix, device_id)
    device = {"identifiers": [node], "name": device_id, "manufacturer": "edge-face",
              "model": "edge-face face recognition", "sw_version": __version__}
    common: dict[str, Any] = {"device": device, "qos": mqtt.qos,
                              "origin": {"name": "edge-face", "sw_version": __version__}}
    available = {"availability_topic": status, "availability_template": _STATE,
                 "payload_available": "online", "payload_not_available": "offline"}
    recognized = event_topic(mqtt.topic_prefix, device_id, "recognized")
    unknown = event_topic(mqtt.topic_prefix, device_id, "unknown")
    camera = event_topic(mqtt.topic_prefix, device_id, "camera")
    entities: list[tuple[str, str, dict[str, Any]]] = [
        ("binary_sensor", "online", {
            "name": "Online", "device_class": "connectivity", "entity_category": "diagnostic",
            "state_topic": status, "value_template": _STATE,
            "payload_on": "online", "payload_off": "offline",
            "json_attributes_topic": status}),
        ("sensor", "last_recognized", {
            "name": "Last recognized", "icon": "mdi:account-check",
            "state_topic": recognized,
            "value_template": _last_recognized_template(config.events.include_label),
            "json_attributes_topic": recognized, **available}),
        ("event", "unknown_face", {
            "name": "Unknown face", "icon": "mdi:account-question",
            "state_topic": unknown, "event_types": ["unknown"],
            "value_template": ("{{ {'event_type': value_json.type, 'camera_id': "
                               "value_json.camera_id, 'similarity': value_json.similarity, "
                               "'time': value_json.time} | to_json }}"),
            **available}),
        ("sensor", "camera", {
            "name": "Camera", "icon": "mdi:cctv", "entity_category": "diagnostic",
            "device_class": "enum", "options": list(CAMERA_STATES),
            "state_topic": camera, "value_template": _STATE,
            "json_attributes_topic": camera, **available}),
    ]
    for _component, object_id, entity in entities:
        entity.update(common, unique_id=f"{node}_{object_id}")
    return entities


def discovery_messages(config: Config) -> list[DiscoveryMessage]:
    """The retained messages that announce this device (an empty payload withdraws each)."""
    prefix = config.mqtt.discovery_prefix  # checked by the config loader
    node = node_id(config.device.id)
    out = []
    for component, object_id, entity in entity_configs(config):
        assert component not in PICTURE_COMPONENTS
        payload = json.dumps(entity, sort_keys=True, separators=(",", ":")).encode()
        out.append(DiscoveryMessage(f"{prefix}/{component}/{node}/{object_id}/config", payload,
                                    component, object_id))
    return out


def describe(messages: list[DiscoveryMessage]) -> list[Mapping[str, str]]:
    """What the CLI prints: each entity's topic, kind and name."""
    return [{"topic": m.topic, "component": m.component, "object_id": m.object_id,
             "name": m.config().get("name", "")} for m in messages]

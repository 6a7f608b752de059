"""Event payloads: the builders and docs/events.schema.json must agree, and nothing but scalars."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from edge.events import schema
from edge.events.schema import (
    MAX_PAYLOAD_BYTES,
    EventSchemaError,
    camera_event,
    encode,
    new_event_id,
    recognized_event,
    status_offline,
    status_online,
    unknown_event,
)
from edge.events.topics import TopicError, event_topic, status_topic

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "events.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    doc = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(
        doc, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _recognized(**over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(device_id="door-1", camera_id="cam0", track_id=7,
                                  person_id="P-01HZX", similarity=0.61234, decision="votes",
                                  votes=3, latency_ms=142.37)
    fields.update(over)
    return recognized_event(**fields)


def _unknown(**over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(device_id="door-1", camera_id="cam0", track_id=8,
                                  similarity=0.12, decision="attempts", votes=6, latency_ms=900.0)
    fields.update(over)
    return unknown_event(**fields)


def test_every_builder_output_validates(validator: jsonschema.Draft202012Validator) -> None:
    payloads = [
        _recognized(),
        _recognized(label="Ada Lovelace", include_label=True),
        _unknown(),
        _unknown(similarity=None),
        camera_event(device_id="door-1", camera_id="cam0", state="lost", attempts=3),
        status_online(device_id="door-1", version="0.1.0", backend="onnxruntime-cpu",
                      detector_model="yunet-2023mar", embedder_model="sface-2021dec"),
        status_offline(device_id="door-1", reason="will"),
        status_offline(device_id="door-1", reason="shutdown"),
    ]
    for payload in payloads:
        validator.validate(json.loads(encode(payload)))
        assert len(encode(payload)) < MAX_PAYLOAD_BYTES


def test_recognized_fields_and_rounding() -> None:
    event = _recognized()
    assert event["schema"] == schema.EVENT_SCHEMA
    assert event["type"] == "recognized"
    assert event["similarity"] == 0.6123
    assert event["latency_ms"] == 142.4
    assert "label" not in event
    parsed = datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(parsed.timestamp() - datetime.now(timezone.utc).timestamp()) < 3600


def test_label_only_when_enabled() -> None:
    assert "label" not in _recognized(label="Ada", include_label=False)
    assert _recognized(label="Ada", include_label=True)["label"] == "Ada"
    with pytest.raises(EventSchemaError, match="label"):
        _recognized(label=None, include_label=True)


def test_unknown_never_carries_identity(validator: jsonschema.Draft202012Validator) -> None:
    event = _unknown()
    assert event["person_id"] is None and "label" not in event
    # include_label does not apply to strangers: they have no name.
    assert "label" not in _unknown(include_label=True)
    with pytest.raises(EventSchemaError, match="no person_id and no label"):
        _unknown(label="someone")
    with pytest.raises(EventSchemaError, match="no person_id"):
        _unknown(person_id="P-1")
    tampered = dict(event, person_id="P-1")
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(tampered)


@pytest.mark.parametrize("bad", [
    np.zeros(128, dtype=np.float32),
    [0.1] * 128,
    b"\xff\xd8\xff\xe0jpeg",
    {"nested": 1},
    (1, 2),
])
def test_encode_refuses_non_scalars(bad: Any) -> None:
    event = _recognized()
    with pytest.raises(EventSchemaError, match="not a JSON scalar"):
        encode(dict(event, template=bad))


def test_numpy_scalars_become_plain_numbers() -> None:
    event = _recognized(similarity=np.float32(0.5), track_id=np.int64(4), votes=np.int32(2))
    data = json.loads(encode(event))
    assert data["similarity"] == 0.5 and data["track_id"] == 4 and data["votes"] == 2


@pytest.mark.parametrize(("field", "value", "match"), [
    ("similarity", float("nan"), "finite"),
    ("similarity", 1.5, "-1..1"),
    ("latency_ms", -1.0, "latency_ms"),
    ("votes", -1, "votes"),
    ("track_id", "7", "track_id"),
    ("decision", "Votes Reached", "decision"),
    ("person_id", "", "person_id"),
    ("device_id", "x" * 200, "longer than"),
])
def test_bad_fields_are_named(field: str, value: Any, match: str) -> None:
    with pytest.raises(EventSchemaError, match=match):
        _recognized(**{field: value})


def test_size_cap() -> None:
    big = {f"k{i}": "v" * 100 for i in range(12)}
    with pytest.raises(EventSchemaError, match="1024-byte limit"):
        encode(big)
    with pytest.raises(EventSchemaError, match="mapping"):
        encode([1, 2])  # type: ignore[arg-type]


def test_camera_and_status_bad_values() -> None:
    with pytest.raises(EventSchemaError, match="camera state"):
        camera_event(device_id="d", camera_id="c", state="exploded", attempts=0)  # type: ignore[arg-type]
    with pytest.raises(EventSchemaError, match="offline reason"):
        status_offline(device_id="d", reason="tired")  # type: ignore[arg-type]
    assert "time" not in status_offline(device_id="d", reason="will")
    with pytest.raises(EventSchemaError, match="recognized or unknown"):
        schema.identity_event("camera", device_id="d", camera_id="c", track_id=1,  # type: ignore[arg-type]
                              person_id=None, similarity=None, decision="x", votes=0,
                              latency_ms=0.0)


def test_schema_rejects_smuggled_template(validator: jsonschema.Draft202012Validator) -> None:
    event = dict(_recognized(), embedding=[0.1] * 128)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(event)


def test_event_ids_are_unique_and_sortable() -> None:
    ids = [new_event_id(now=1_700_000_000.0 + i) for i in range(2000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)
    same_ms = {new_event_id(now=1_700_000_000.0) for _ in range(1000)}
    assert len(same_ms) == 1000


def test_topics() -> None:
    assert status_topic("edge-face", "door-1") == "edge-face/door-1/status"
    assert event_topic("site/a", "door-1", "unknown") == "site/a/door-1/events/unknown"
    for bad_device in ("a/b", "a+", "#", "", " door"):
        with pytest.raises(TopicError, match=r"\[device\] id"):
            status_topic("edge-face", bad_device)
    with pytest.raises(TopicError, match="topic_prefix"):
        status_topic("edge-face/", "door-1")
    with pytest.raises(TopicError, match="unknown event type"):
        event_topic("edge-face", "door-1", "selfie")

"""The MQTT publisher against a real mosquitto: topics, schema, order, outages, auth, TLS."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mqtt_broker import (
    Broker,
    BrokerFactory,
    Received,
    Subscriber,
    TcpProxy,
    broker_factory,
    make_password_file,
    make_tls_files,
    mqtt_broker,
)

from edge.config import MqttConfig
from edge.events.outbox import Outbox
from edge.events.publisher import Publisher, PublisherError
from edge.events.schema import (
    EventSchemaError,
    camera_event,
    recognized_event,
    status_online,
    unknown_event,
)

# pytest finds fixtures by name in this module's namespace; naming them here marks the import
# as used (the lead's conftest may re-export them for every test module instead).
BROKER_FIXTURES = (broker_factory, mqtt_broker)

DEVICE = "door-1"
SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "events.schema.json")
                    .read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _event(i: int) -> dict[str, Any]:
    if i % 5 == 4:
        return camera_event(device_id=DEVICE, camera_id="cam0", state="lost", attempts=i)
    if i % 2:
        return unknown_event(device_id=DEVICE, camera_id="cam0", track_id=i, similarity=0.1,
                             decision="attempts", votes=6, latency_ms=310.0)
    return recognized_event(device_id=DEVICE, camera_id="cam0", track_id=i,
                            person_id=f"P-{i:03d}", similarity=0.7, decision="votes", votes=2,
                            latency_ms=120.5, label="Ada", include_label=True)


def _wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Bounded wait for a condition that another thread or process makes true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _events(messages: list[Received]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if "/events/" in m.topic]


def _first_seen(messages: list[Received]) -> list[str]:
    """Consumer-side dedupe by event_id, keeping first arrival order."""
    seen: dict[str, None] = {}
    for payload in _events(messages):
        seen.setdefault(payload["event_id"], None)
    return list(seen)


@pytest.fixture
def publishers() -> Iterator[list[Publisher]]:
    made: list[Publisher] = []
    yield made
    for p in made:
        p.close(timeout=1.0)


def _publisher(made: list[Publisher], broker: Broker | TcpProxy, outbox_path: Path,
               **mqtt: Any) -> Publisher:
    outbox_kw = {k: mqtt.pop(k) for k in ("max_events",) if k in mqtt}
    cfg = MqttConfig(host=broker.host, port=broker.port, **mqtt)
    pub = Publisher(cfg, DEVICE, Outbox(outbox_path, **outbox_kw), own_outbox=True,
                    reconnect_min_s=0.1, reconnect_max_s=1.0)
    made.append(pub)
    return pub


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_events_arrive_with_topics_schema_and_order(
        protocol: str, mqtt_broker: Broker, publishers: list[Publisher], tmp_path: Path) -> None:
    sub = Subscriber(mqtt_broker)
    online = status_online(device_id=DEVICE, version="0.1.0", backend="onnxruntime-cpu",
                           detector_model="yunet-2023mar", embedder_model="sface-2021dec")
    cfg = MqttConfig(host=mqtt_broker.host, port=mqtt_broker.port, protocol=protocol)  # type: ignore[arg-type]
    pub = Publisher(cfg, DEVICE, Outbox(tmp_path / "o.sqlite3"), online_payload=online,
                    own_outbox=True)
    publishers.append(pub)
    pub.start()
    assert pub.wait_connected(10)
    sent = [_event(i) for i in range(20)]
    for payload in sent:
        pub.publish_event(payload)
    got = sub.wait_for(lambda m: len(_events(m)) >= 20)
    events = _events(got)
    assert [e["event_id"] for e in events] == [e["event_id"] for e in sent]
    for msg in got:
        VALIDATOR.validate(msg.json())
        assert len(msg.payload) < 1024
    for msg, payload in zip([m for m in got if "/events/" in m.topic], sent, strict=True):
        assert msg.topic == f"edge-face/{DEVICE}/events/{payload['type']}"
    assert pub.flush(10)
    stats = pub.stats()
    assert stats.connected and stats.outbox_depth == 0 and stats.acked == 20
    assert stats.dropped == 0 and stats.inflight == 0

    # A subscriber arriving later still learns the device is online (retained).
    late = Subscriber(mqtt_broker, f"edge-face/{DEVICE}/status")
    status = late.wait_for(lambda m: len(m) >= 1)[0]
    assert status.retain and status.json()["state"] == "online"
    assert status.json()["backend"] == "onnxruntime-cpu"

    assert pub.close(timeout=5)
    offline = late.wait_for(lambda m: any(x.json()["state"] == "offline" for x in m))[-1].json()
    assert offline == {**offline, "state": "offline", "reason": "shutdown"}
    VALIDATOR.validate(offline)
    later = Subscriber(mqtt_broker, f"edge-face/{DEVICE}/status")
    retained = later.wait_for(lambda m: len(m) >= 1)[0]
    assert retained.retain and retained.json()["state"] == "offline"
    for s in (sub, late, later):
        s.close()


def test_qos0_removes_on_send(mqtt_broker: Broker, publishers: list[Publisher],
                              tmp_path: Path) -> None:
    sub = Subscriber(mqtt_broker, f"edge-face/{DEVICE}/events/#")
    pub = _publisher(publishers, mqtt_broker, tmp_path / "o.sqlite3", qos=0)
    pub.start()
    assert pub.wait_connected(10)
    ids = [pub.publish_event(_event(i)) for i in range(10)]
    assert len(ids) == 10
    assert pub.flush(10)
    got = sub.wait_for(lambda m: len(m) >= 10)
    assert len(_first_seen(got)) == 10
    sub.close()


def test_broker_down_at_start_events_wait_in_the_outbox(
        broker_factory: BrokerFactory, publishers: list[Publisher], tmp_path: Path) -> None:
    broker = broker_factory(persistence=True)
    sub = Subscriber(broker, f"edge-face/{DEVICE}/events/#", persistent=True)
    broker.stop()  # the subscriber's session is saved; the publisher finds no broker
    pub = _publisher(publishers, broker, tmp_path / "o.sqlite3")
    pub.start()  # must not raise or block
    sent = [_event(i) for i in range(12)]
    for payload in sent:
        pub.publish_event(payload)
    assert _wait_until(lambda: pub.stats().connect_failures >= 2)
    stats = pub.stats()
    assert not stats.connected and stats.outbox_depth == 12 and stats.acked == 0
    assert "cannot connect" in stats.last_error

    broker.start()
    assert pub.wait_connected(20)
    assert pub.flush(20)
    got = sub.wait_for(lambda m: len(_first_seen(m)) >= 12)
    assert _first_seen(got) == [p["event_id"] for p in sent]
    sub.close()


def test_broker_restart_mid_stream_loses_nothing_and_keeps_order(
        broker_factory: BrokerFactory, publishers: list[Publisher], tmp_path: Path) -> None:
    broker = broker_factory(persistence=True)
    sub = Subscriber(broker, f"edge-face/{DEVICE}/events/#", persistent=True)
    pub = _publisher(publishers, broker, tmp_path / "o.sqlite3")
    pub.start()
    assert pub.wait_connected(10)
    sent: list[str] = []
    for i in range(45):
        if i == 15:
            broker.stop()
        if i == 30:
            broker.start()
        payload = _event(i)
        pub.publish_event(payload)
        sent.append(payload["event_id"])
    assert pub.flush(30)
    got = sub.wait_for(lambda m: set(_first_seen(m)) >= set(sent), timeout=30)
    assert _first_seen(got) == sent  # complete, in order, after dedupe by event_id
    assert pub.stats().connects >= 2
    sub.close()


def test_in_flight_events_are_resent_in_order_after_a_lost_connection(
        mqtt_broker: Broker, publishers: list[Publisher], tmp_path: Path) -> None:
    sub = Subscriber(mqtt_broker, f"edge-face/{DEVICE}/events/#")
    proxy = TcpProxy(mqtt_broker)
    pub = _publisher(publishers, proxy, tmp_path / "o.sqlite3")
    pub.start()
    assert pub.wait_connected(10)
    sent = [_event(i) for i in range(30)]
    for payload in sent[:5]:
        pub.publish_event(payload)
    assert pub.flush(10)
    proxy.hold_replies()  # the broker receives and forwards, but its PUBACKs are lost
    for payload in sent[5:20]:
        pub.publish_event(payload)
    assert _wait_until(lambda: len(_events(sub.messages)) >= 20)
    assert pub.stats().inflight > 0  # unacknowledged when the link dies
    proxy.release()
    proxy.cut()
    for payload in sent[20:]:
        pub.publish_event(payload)
    assert pub.flush(20)
    got = sub.wait_for(lambda m: set(_first_seen(m)) >= {p["event_id"] for p in sent})
    assert _first_seen(got) == [p["event_id"] for p in sent]
    assert len(_events(got)) > len(sent)  # the in-flight ones came twice: QoS 1, deduped
    assert pub.stats().connects == 2
    sub.close()
    proxy.close()


def test_outbox_bounds_drop_oldest_while_the_broker_is_away(
        broker_factory: BrokerFactory, publishers: list[Publisher], tmp_path: Path) -> None:
    broker = broker_factory(persistence=True)
    sub = Subscriber(broker, f"edge-face/{DEVICE}/events/#", persistent=True)
    broker.stop()
    pub = _publisher(publishers, broker, tmp_path / "o.sqlite3", max_events=5)
    pub.start()
    sent = [_event(i) for i in range(8)]
    for payload in sent:
        pub.publish_event(payload)
    stats = pub.stats()
    assert stats.dropped == 3 and stats.outbox_depth == 5
    broker.start()
    assert pub.flush(20)
    got = sub.wait_for(lambda m: len(_first_seen(m)) >= 5)
    assert _first_seen(got) == [p["event_id"] for p in sent[3:]]
    sub.close()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_wrong_password_is_logged_retried_and_loses_nothing(
        protocol: str, broker_factory: BrokerFactory, publishers: list[Publisher],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pw = make_password_file(tmp_path / "passwd", {"edge": "right-secret"})
    broker = broker_factory(password_file=pw)
    secret = tmp_path / "mqtt.secret"
    secret.write_text("wrong-secret\n")
    pub = _publisher(publishers, broker, tmp_path / "o.sqlite3", protocol=protocol,
                     username="edge", password_file=str(secret))
    pub.start()
    for i in range(5):
        pub.publish_event(_event(i))
    assert _wait_until(lambda: pub.stats().connect_failures >= 3)  # retried, not crashed
    stats = pub.stats()
    assert not stats.connected and stats.outbox_depth == 5
    assert "refused" in stats.last_error
    refusals = [r for r in caplog.records if "refused the connection" in r.getMessage()]
    assert refusals and refusals[0].levelname == "ERROR"
    reason = refusals[0].getMessage().split(": ", 1)[1]
    assert "authori" in reason.lower() or "password" in reason.lower()
    # Repeats of the same refusal are not re-logged at ERROR every few seconds.
    assert len([r for r in refusals if r.levelname == "ERROR"]) == 1
    assert not pub.close(timeout=1)  # nothing could be delivered ...
    with Outbox(tmp_path / "o.sqlite3") as outbox:  # ... and nothing was lost
        assert outbox.depth() == 5


def test_password_from_file(broker_factory: BrokerFactory, publishers: list[Publisher],
                            tmp_path: Path) -> None:
    pw = make_password_file(tmp_path / "passwd", {"edge": "s3cret pass", "viewer": "v"})
    broker = broker_factory(password_file=pw)
    secret = tmp_path / "mqtt.secret"
    secret.write_text("s3cret pass\n")
    sub = Subscriber(broker, f"edge-face/{DEVICE}/events/#", username="viewer", password="v")
    pub = _publisher(publishers, broker, tmp_path / "o.sqlite3", username="edge",
                     password_file=str(secret))
    pub.start()
    assert pub.wait_connected(10)
    pub.publish_event(_event(0))
    assert len(sub.wait_for(lambda m: len(m) >= 1)) == 1
    sub.close()


def test_tls_with_client_certificates(broker_factory: BrokerFactory,
                                      publishers: list[Publisher], tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "pki")
    broker = broker_factory(tls=tls, require_certificate=True)
    sub = Subscriber(broker, f"edge-face/{DEVICE}/events/#", tls=tls)
    pub = _publisher(publishers, broker, tmp_path / "o.sqlite3", tls=True, ca_file=str(tls.ca),
                     cert_file=str(tls.client_cert), key_file=str(tls.client_key))
    pub.start()
    assert pub.wait_connected(10)
    payload = _event(0)
    pub.publish_event(payload)
    got = sub.wait_for(lambda m: len(m) >= 1)
    assert got[0].json()["event_id"] == payload["event_id"]

    # Without a client certificate the broker refuses the handshake: logged, retried, queued.
    bare = _publisher(publishers, broker, tmp_path / "o2.sqlite3", tls=True,
                      ca_file=str(tls.ca), protocol="3.1.1")
    bare.start()
    bare.publish_event(_event(1))
    assert _wait_until(lambda: bare.stats().connect_failures >= 2)
    assert not bare.connected and bare.stats().outbox_depth == 1
    sub.close()


def test_event_refused_by_the_broker_stays_queued_and_is_retried(
        broker_factory: BrokerFactory, publishers: list[Publisher], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    acl = tmp_path / "acl"
    # Events may not be written yet; anyone may read (the test subscriber).
    acl.write_text(f"topic read edge-face/#\ntopic write edge-face/{DEVICE}/status\n")
    broker = broker_factory(acl_file=acl)
    sub = Subscriber(broker, f"edge-face/{DEVICE}/events/#")
    pub = _publisher(publishers, broker, tmp_path / "o.sqlite3", protocol="5")
    pub.start()
    assert pub.wait_connected(10)
    sent = [_event(i) for i in range(3)]
    for payload in sent:
        pub.publish_event(payload)
    assert _wait_until(lambda: pub.stats().rejected >= 2)  # refused, then retried
    stats = pub.stats()
    assert stats.outbox_depth == 3 and stats.acked == 0
    assert "Not authorized" in stats.last_error
    assert any("rejected an event" in r.getMessage() for r in caplog.records)

    acl.write_text(f"topic read edge-face/#\ntopic write edge-face/{DEVICE}/#\n")
    broker.reload()  # the operator fixes the ACL; nothing was lost meanwhile
    assert pub.flush(20)
    got = sub.wait_for(lambda m: len(_first_seen(m)) >= 3)
    assert _first_seen(got) == [p["event_id"] for p in sent]
    sub.close()


@pytest.mark.parametrize(("mqtt", "match"), [
    ({"tls": True, "ca_file": "/nonexistent/ca.pem"}, "ca_file /nonexistent/ca.pem"),
    ({"tls": True, "cert_file": "/x.pem"}, "cert_file and key_file"),
    ({"tls": False, "ca_file": "/x.pem"}, "tls = false"),
    ({"username": "u", "password": "p", "password_file": "/p"}, "either password"),
    ({"username": "u", "password_file": "/nonexistent/secret"}, "password_file"),
    ({"password": "p"}, "username"),
])
def test_bad_mqtt_settings_are_named(mqtt: dict[str, Any], match: str, tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox, pytest.raises(PublisherError, match=match):
        Publisher(MqttConfig(**mqtt), DEVICE, outbox)


def test_unreadable_tls_material_is_named(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "pki")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        with pytest.raises(PublisherError, match="ca_file"):
            Publisher(MqttConfig(tls=True, ca_file=str(garbage)), DEVICE, outbox)
        with pytest.raises(PublisherError, match="client certificate"):
            Publisher(MqttConfig(tls=True, ca_file=str(tls.ca), cert_file=str(tls.client_cert),
                                 key_file=str(tls.server_key)), DEVICE, outbox)


def test_bad_events_are_refused_before_the_outbox(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        pub = Publisher(MqttConfig(), DEVICE, outbox)
        with pytest.raises(EventSchemaError, match="not this device"):
            pub.publish_event(dict(_event(0), device_id="door-2"))
        with pytest.raises(EventSchemaError, match="not a JSON scalar"):
            pub.publish_event(dict(_event(0), embedding=[0.0] * 128))
        assert outbox.depth() == 0
        pub.publish_event(_event(0))  # queued although never started: the broker may be away
        assert outbox.depth() == 1
        pub.close(timeout=0.1)
        with pytest.raises(PublisherError, match="closed"):
            pub.publish_event(_event(1))

"""Home Assistant MQTT discovery: the payloads, their templates, and their delivery.

Home Assistant itself cannot run here, so its side is played by what its documentation fixes: a
discovery config is a retained JSON object on ``<prefix>/<component>/<node_id>/<object_id>/config``
with the documented keys of that component (checked against the key lists below, so a misspelt
key fails), and its templates are Jinja2 rendered with ``value_json`` (rendered here in Jinja2's
sandbox with Home Assistant's ``to_json`` filter, against payloads the daemon really sent). The
broker is a real mosquitto and the configs are read back by a real subscriber.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2.sandbox
import pytest
from mqtt_broker import (  # noqa: F401 (broker_factory, mqtt_broker: fixtures)
    Broker,
    Received,
    Subscriber,
    broker_factory,
    free_port,
    mqtt_broker,
)
from paho.mqtt import publish as paho_publish
from test_daemon import door  # noqa: F401 (fixture: enrolled person, clip, mosquitto)

from edge.cli import main as cli_main
from edge.config import Config, load_config
from edge.errors import ConfigError
from edge.events.discovery import PICTURE_COMPONENTS, discovery_messages, node_id
from edge.events.publisher import Publisher, PublisherError, publish_retained
from edge.events.schema import (
    camera_event,
    recognized_event,
    status_offline,
    status_online,
    unknown_event,
)

# Keys Home Assistant documents for each MQTT component we use (plus the shared ones).
_COMMON = {"name", "unique_id", "device", "origin", "qos", "icon", "entity_category",
           "availability_topic", "availability_template", "payload_available",
           "payload_not_available", "json_attributes_topic", "json_attributes_template",
           "state_topic", "value_template", "device_class"}
DOCUMENTED = {
    "binary_sensor": _COMMON | {"payload_on", "payload_off", "off_delay", "expire_after"},
    "sensor": _COMMON | {"options", "unit_of_measurement", "state_class", "expire_after"},
    "event": _COMMON | {"event_types"},
}
DEVICE_KEYS = {"identifiers", "name", "manufacturer", "model", "sw_version"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
WAIT_S = 10.0


def _config(tmp_path: Path, text: str = "", **env: str) -> Config:
    conf = tmp_path / "discovery.toml"
    conf.write_text(f'[device]\nid = "door.1"\n[storage]\ndata_dir = "{tmp_path / "data"}"\n'
                    f'key_file = "{tmp_path / "k" / "k"}"\n' + text, encoding="utf-8")
    return load_config(conf, env=env)


def _render(template: str, payload: dict[str, Any]) -> str:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    env.filters["to_json"] = json.dumps
    return env.from_string(template).render(value_json=payload).strip()


def check_documented_format(topic: str, config: dict[str, Any], prefix: str, node: str) -> str:
    """One discovery config as Home Assistant documents it; returns its component."""
    parts = topic.split("/")
    assert parts[:-4] == prefix.split("/") and parts[-1] == "config", topic
    component, topic_node, object_id = parts[-4:-1]
    assert topic_node == node and component in DOCUMENTED, topic
    assert component not in PICTURE_COMPONENTS
    assert set(config) <= DOCUMENTED[component], set(config) - DOCUMENTED[component]
    assert config["state_topic"] and config["name"]
    assert config["unique_id"] == f"{node}_{object_id}"
    assert set(config["device"]) <= DEVICE_KEYS and config["device"]["identifiers"] == [node]
    assert set(config["origin"]) <= ORIGIN_KEYS and config["origin"]["name"] == "edge-face"
    if component == "event":
        assert config["event_types"] and all(isinstance(t, str) for t in config["event_types"])
    if "availability_topic" in config:
        assert {"availability_template", "payload_available",
                "payload_not_available"} <= set(config)
    return component


# ------------------------------------------------------------------------------- payloads


def test_discovery_is_off_by_default_and_the_prefix_is_checked(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert config.mqtt.discovery is False and config.mqtt.discovery_prefix == "homeassistant"
    for bad in ("", "home/+/x", "home//x", " ha", "ha#"):
        with pytest.raises(ConfigError, match="EDGE_FACE_MQTT__DISCOVERY_PREFIX"):
            _config(tmp_path, EDGE_FACE_MQTT__DISCOVERY_PREFIX=bad)
    nested = _config(tmp_path, '[mqtt]\ndiscovery_prefix = "site/ha"\n')
    assert all(m.topic.startswith("site/ha/") for m in discovery_messages(nested))


def test_each_device_id_is_its_own_home_assistant_device() -> None:
    ids = ["door-1", "door_1", "door.1", "door 1", "door:1", "DOOR.1", "tür-1", "tür.1",
           "lobby.east", "a" * 64]
    nodes = [node_id(i) for i in ids]
    assert len(set(nodes)) == len(ids), dict(zip(ids, nodes, strict=True))
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", n) for n in nodes)
    # Safe ids are kept readable, exactly as documented.
    assert node_id("door-1") == "edge-face_door-1" and node_id("door_1") == "edge-face_door_1"
    assert node_id("door.1") == node_id("door.1")  # stable across restarts


def test_entities_follow_the_documented_format(tmp_path: Path) -> None:
    config = _config(tmp_path)
    node = node_id("door.1")
    assert re.fullmatch(r"edge-face_door_1_[0-9a-f]{8}", node), node
    messages = discovery_messages(config)
    got = {(m.component, m.object_id): m.config() for m in messages}
    assert set(got) == {("binary_sensor", "online"), ("sensor", "last_recognized"),
                        ("event", "unknown_face"), ("sensor", "camera")}
    for m in messages:
        check_documented_format(m.topic, m.config(), "homeassistant", node)
    status = "edge-face/door.1/status"
    online = got[("binary_sensor", "online")]
    assert online["state_topic"] == status and "availability_topic" not in online
    assert online["device_class"] == "connectivity"
    for key in (("sensor", "last_recognized"), ("event", "unknown_face"), ("sensor", "camera")):
        assert got[key]["availability_topic"] == status
    assert got[("sensor", "last_recognized")]["json_attributes_topic"] == (
        "edge-face/door.1/events/recognized")
    assert got[("event", "unknown_face")]["state_topic"] == "edge-face/door.1/events/unknown"
    assert got[("sensor", "camera")]["options"] == ["open", "lost", "reopened"]
    assert len({c["unique_id"] for c in got.values()}) == 4


def test_templates_render_the_real_payloads(tmp_path: Path) -> None:
    got = {m.object_id: m.config() for m in discovery_messages(_config(tmp_path))}
    online = status_online(device_id="door.1", version="0.1.0", backend="cpu",
                           detector_model="d", embedder_model="e")
    offline = status_offline(device_id="door.1", reason="will")
    assert _render(got["online"]["value_template"], online) == got["online"]["payload_on"]
    assert _render(got["online"]["value_template"], offline) == got["online"]["payload_off"]
    for entity in ("last_recognized", "unknown_face", "camera"):
        template = got[entity]["availability_template"]
        assert _render(template, online) == got[entity]["payload_available"]
        assert _render(template, offline) == got[entity]["payload_not_available"]
    seen = recognized_event(device_id="door.1", camera_id="cam0", track_id=3, person_id="P-1",
                            similarity=0.7, decision="votes", votes=2, latency_ms=100.0)
    assert _render(got["last_recognized"]["value_template"], seen) == "P-1"
    stranger = unknown_event(device_id="door.1", camera_id="cam0", track_id=4, similarity=0.2,
                             decision="attempts", votes=4, latency_ms=800.0)
    fired = json.loads(_render(got["unknown_face"]["value_template"], stranger))
    assert fired == {"event_type": "unknown", "camera_id": "cam0", "similarity": 0.2,
                     "time": stranger["time"]}
    assert fired["event_type"] in got["unknown_face"]["event_types"]
    for state in ("open", "lost", "reopened"):
        cam = camera_event(device_id="door.1", camera_id="cam0", state=state, attempts=0)
        assert _render(got["camera"]["value_template"], cam) in got["camera"]["options"]


def test_label_is_shown_only_when_labels_are_sent(tmp_path: Path) -> None:
    off = discovery_messages(_config(tmp_path))
    assert all(b"label" not in m.payload for m in off)
    on = {m.object_id: m.config() for m in discovery_messages(
        _config(tmp_path, "[events]\ninclude_label = true\n"))}
    template = on["last_recognized"]["value_template"]
    labelled = recognized_event(device_id="door.1", camera_id="cam0", track_id=1, person_id="P-1",
                                similarity=0.7, decision="votes", votes=2, latency_ms=1.0,
                                label="Ada Lovelace", include_label=True)
    assert _render(template, labelled) == "Ada Lovelace"
    # An event from before labels were turned on has none: the person id is shown instead.
    unlabelled = recognized_event(device_id="door.1", camera_id="cam0", track_id=1,
                                  person_id="P-1", similarity=0.7, decision="votes", votes=2,
                                  latency_ms=1.0)
    assert _render(template, unlabelled) == "P-1"


def test_no_payload_can_carry_a_picture_or_an_unknown_person(tmp_path: Path) -> None:
    for text in ("", "[events]\ninclude_label = true\n"):
        for m in discovery_messages(_config(tmp_path, text)):
            blob = m.payload.decode().lower()
            assert m.component not in PICTURE_COMPONENTS
            for word in ("image", "picture", "url", "jpeg", "png", "base64", "embedding"):
                assert word not in blob, (m.topic, word)
            # The unknown-face entity reads only what an unknown event has: no identity field.
            if m.object_id == "unknown_face":
                assert "person_id" not in blob and "label" not in blob


# --------------------------------------------------------------- over a real mosquitto


class _Reader(Subscriber):
    """The shared recording subscriber, waiting as these tests do (``WAIT_S``)."""

    def wait(self, predicate: Any) -> list[Received]:
        return self.wait_for(predicate, timeout=WAIT_S)


def _configs(messages: list[Received]) -> dict[str, bytes]:
    return {t: p for t, p, _ in messages if t.startswith("homeassistant/")}


def _until_online(config: Config, broker: Broker) -> list[Received]:
    """Run the daemon's publisher until its online status arrives; what a subscriber got."""
    live = _Reader(broker)
    pub = Publisher.from_config(config, reconnect_min_s=0.1, reconnect_max_s=1.0)
    try:
        pub.start()
        assert pub.wait_connected(WAIT_S)
        return live.wait(lambda ms: any(t.endswith("/status") for t, _, _ in ms))
    finally:
        pub.close(timeout=5)
        live.close()


def test_publisher_announces_on_connect_before_online(tmp_path: Path,
                                                      mqtt_broker: Broker) -> None:  # noqa: F811
    got = _until_online(_config(tmp_path, "[mqtt]\ndiscovery = true\n", **mqtt_broker.env()),
                        mqtt_broker)
    topics = [t for t, _, _ in got]
    assert len(_configs(got)) == 4
    assert max(topics.index(t) for t in _configs(got)) < topics.index("edge-face/door.1/status")
    late = _Reader(mqtt_broker, "homeassistant/#")  # as Home Assistant after its restart
    try:
        kept = late.wait(lambda ms: len(ms) >= 4)
    finally:
        late.close()
    assert len(kept) == 4 and all(retained for _, _, retained in kept)
    for topic, payload, _ in kept:
        check_documented_format(topic, json.loads(payload), "homeassistant", node_id("door.1"))


def test_publisher_without_discovery_announces_nothing(tmp_path: Path,
                                                       mqtt_broker: Broker) -> None:  # noqa: F811
    assert _configs(_until_online(_config(tmp_path, **mqtt_broker.env()), mqtt_broker)) == {}


def _cli(tmp_path: Path, broker_env: dict[str, str], *args: str,
         capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    conf = tmp_path / "cli.toml"
    conf.write_text(f'[device]\nid = "door.1"\n[storage]\ndata_dir = "{tmp_path / "data"}"\n'
                    f'key_file = "{tmp_path / "k" / "k"}"\n[mqtt]\nhost = "127.0.0.1"\n'
                    f'port = {broker_env["EDGE_FACE_MQTT__PORT"]}\n', encoding="utf-8")
    code = cli_main(["--config", str(conf), "mqtt", "discovery", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_publishes_then_removes(tmp_path: Path, mqtt_broker: Broker,  # noqa: F811
                                    capsys: pytest.CaptureFixture[str]) -> None:
    # Works whatever [mqtt] discovery says: the command is the explicit request.
    code, out, err = _cli(tmp_path, mqtt_broker.env(), "--json", capsys=capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["action"] == "published" and len(doc["entities"]) == 4
    late = _Reader(mqtt_broker, "homeassistant/#")
    kept = late.wait(lambda ms: len(ms) >= 4)
    assert sorted(t for t, _, _ in kept) == sorted(e["topic"] for e in doc["entities"])
    code, out, err = _cli(tmp_path, mqtt_broker.env(), "--remove", capsys=capsys)
    assert code == 0, err
    assert out.startswith("removed 4 Home Assistant entities of door.1 under homeassistant/")
    cleared = late.wait(lambda ms: len(ms) >= 8)
    late.close()
    assert [p for _, p, _ in cleared[4:]] == [b""] * 4  # what makes Home Assistant delete them
    # A new subscriber gets every retained message at once on subscribing; a marker published
    # after that arrives behind them, so once it is in, nothing retained was left to come.
    after = _Reader(mqtt_broker, "homeassistant/#")
    try:
        marker = "homeassistant/edge-face-test/marker"
        paho_publish.single(marker, b"end", qos=1, hostname=mqtt_broker.host,
                            port=mqtt_broker.port)
        got = after.wait(lambda ms: any(t == marker for t, _, _ in ms))
        assert [(t, p) for t, p, _ in got] == [(marker, b"end")]
    finally:
        after.close()


def test_cli_with_no_broker_is_one_line(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    env = {"EDGE_FACE_MQTT__PORT": str(free_port())}
    code, out, err = _cli(tmp_path, env, "--timeout", "3", capsys=capsys)
    assert code == 1 and out == ""
    assert err.startswith("edge-face: error: cannot connect to MQTT broker 127.0.0.1:")
    assert len(err.strip().splitlines()) == 1


def test_cli_refused_by_the_broker_is_one_line(tmp_path: Path, broker_factory,  # noqa: F811
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from mqtt_broker import make_password_file

    locked = broker_factory(password_file=make_password_file(tmp_path / "pw", {"u": "p"}))
    code, out, err = _cli(tmp_path, locked.env(), capsys=capsys)
    assert code == 1 and out == ""
    assert "refused the connection" in err and len(err.strip().splitlines()) == 1


def test_cli_bad_timeout_is_a_usage_error(tmp_path: Path, mqtt_broker: Broker,  # noqa: F811
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _cli(tmp_path, mqtt_broker.env(), "--timeout", "0", capsys=capsys)
    assert exit_.value.code == 2
    assert "is not a number of seconds" in capsys.readouterr().err


def test_one_shot_client_refuses_tls_files_without_tls(tmp_path: Path) -> None:
    conf = _config(tmp_path, '[mqtt]\ncert_file = "/nonexistent.pem"\n')
    with pytest.raises(PublisherError, match="tls = false"):
        publish_retained(conf.mqtt, "x", [])


# ------------------------------------------------------------------ the daemon, end to end


def test_daemon_announces_and_home_assistant_reads_its_events(door) -> None:  # noqa: F811
    env, person, broker = door
    env = dict(env, EDGE_FACE_MQTT__DISCOVERY="true", EDGE_FACE_EVENTS__INCLUDE_LABEL="true")
    live = _Reader(broker)
    try:
        proc = subprocess.run([sys.executable, "-m", "edge.cli", "run"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = live.wait(lambda ms: sum("/events/" in t for t, _, _ in ms) >= 3)
    finally:
        live.close()
    configs = {t.split("/")[-2]: json.loads(p) for t, p in _configs(got).items()}
    assert set(configs) == {"online", "last_recognized", "unknown_face", "camera"}
    events = {t.rsplit("/", 1)[-1]: json.loads(p) for t, p, _ in got if "/events/" in t}
    # What Home Assistant would show, from what the daemon really sent.
    assert _render(configs["last_recognized"]["value_template"], events["recognized"]) == "A"
    assert json.loads(_render(configs["unknown_face"]["value_template"],
                              events["unknown"]))["event_type"] == "unknown"
    assert _render(configs["camera"]["value_template"], events["camera"]) == "open"
    # The configs name no one: not the enrolled person, not their label.
    blob = b"".join(_configs(got).values())
    assert person.encode() not in blob and b'"A"' not in blob

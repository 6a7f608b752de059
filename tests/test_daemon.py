"""The daemon as a real process: a clip, enrolled people, a real mosquitto, real events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from mqtt_broker import Broker, broker_factory, mqtt_broker  # noqa: F401 (fixtures)

from edge.demo.clip import write_clip

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "test-door"


class Subscriber:
    def __init__(self, broker: Broker) -> None:
        self.messages: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"edge-face/{DEVICE}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def events(self) -> list[dict]:
        with self._lock:
            return [p for t, p in self.messages if "/events/" in t and p["type"] != "camera"]


@pytest.fixture
def door(tmp_path: Path, models_dir: Path, fixture_dir: Path, mqtt_broker: Broker):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_FACE_")}
    (tmp_path / "config.toml").write_text(f'[models]\ndir = "{models_dir}"\n')
    env.update({
        "EDGE_FACE_CONFIG": str(tmp_path / "config.toml"),
        "EDGE_FACE_DEVICE__ID": DEVICE,
        "EDGE_FACE_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "EDGE_FACE_STORAGE__KEY_FILE": str(tmp_path / "keys" / "k"),
        "EDGE_FACE_CAMERA__SOURCE": str(tmp_path / "door.avi"),
        "EDGE_FACE_CAMERA__REALTIME": "false",
        "EDGE_FACE_LOGGING__FORMAT": "json",
        **mqtt_broker.env(),
    })

    def cli(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "edge.cli", *args, "--json"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    person = cli("person", "add", "--label", "A", "--consent-by", "A", "--purpose", "door")["id"]
    cli("enroll", person, str(fixture_dir / "obama.jpg"), str(fixture_dir / "obama2.jpg"))
    write_clip([fixture_dir / "obama3.jpg", fixture_dir / "biden.jpg"], tmp_path / "door.avi")
    return env, person, mqtt_broker


def _run_daemon(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", "run"], env=env,
                          capture_output=True, text=True, timeout=300)


def _clip_events(env: dict[str, str], broker: Broker,
                 want: int = 2) -> tuple[subprocess.CompletedProcess, Subscriber]:
    """Run the daemon over the clip; its process and the subscriber that saw its messages."""
    import time

    sub = Subscriber(broker)
    try:
        proc = _run_daemon(env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        deadline = time.monotonic() + 10
        while len(sub.events()) < want and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sub.close()
    return proc, sub


def test_clip_gives_one_recognized_then_one_unknown(door) -> None:
    env, person, broker = door
    proc, sub = _clip_events(env, broker)
    schema = json.loads((ROOT / "docs" / "events.schema.json").read_text())
    events = sub.events()
    assert [e["type"] for e in events] == ["recognized", "unknown"]
    assert events[0]["person_id"] == person and "label" not in events[0]
    assert events[1]["person_id"] is None
    for _topic, payload in sub.messages:
        jsonschema.validate(payload, schema)
        assert len(json.dumps(payload)) < 1024
    states = [p["state"] for t, p in sub.messages if t.endswith("/status")]
    assert states[0] == "online" and states[-1] == "offline"
    assert len({e["event_id"] for e in events}) == len(events)
    # Logs are structured and carry no template or picture.
    for line in proc.stderr.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            assert "embedding" not in record


def test_broker_down_at_start_loses_nothing(door, broker_factory) -> None:  # noqa: F811
    env, _person, broker = door
    broker.stop()
    proc = _run_daemon(env)  # the clip runs while the broker is down; events wait in the outbox
    assert proc.returncode == 0, proc.stderr[-2000:]
    broker.start()
    sub = Subscriber(broker)
    try:
        env2 = dict(env, EDGE_FACE_CAMERA__SOURCE="none")
        daemon = subprocess.Popen([sys.executable, "-m", "edge.cli", "run"], env=env2,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        import time

        deadline = time.monotonic() + 30
        while len(sub.events()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        daemon.terminate()
        assert daemon.wait(timeout=15) == 0
    finally:
        sub.close()
    assert [e["type"] for e in sub.events()] == ["recognized", "unknown"]


def test_include_label_with_an_unlabelled_person_sends_no_label(door, fixture_dir: Path,
                                                                tmp_path: Path) -> None:
    """A person may have no label; with include_label on, the event simply has none."""
    env, _labelled, broker = door
    env = dict(env, EDGE_FACE_EVENTS__INCLUDE_LABEL="true",
               EDGE_FACE_STORAGE__DATA_DIR=str(tmp_path / "data2"))

    def cli(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "edge.cli", *args, "--json"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    person = cli("person", "add", "--consent-by", "B", "--purpose", "door")["id"]
    cli("enroll", person, str(fixture_dir / "obama.jpg"))
    _proc, sub = _clip_events(env, broker)
    recognized = [e for e in sub.events() if e["type"] == "recognized"]
    assert recognized and recognized[0]["person_id"] == person and "label" not in recognized[0]

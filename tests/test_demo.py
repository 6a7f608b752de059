"""The demo on its fallback broker (amqtt), and that broker driven by real paho clients.

mosquitto is the demo's first choice: with it on PATH, the library broker is not started.

The demo test runs ``python -m edge.demo.run`` as a user would, with every folder that holds a
``mosquitto`` removed from PATH, and checks that the subscriber saw each event of the clip and
the status pair around them. mosquitto stays the broker the rest of the suite trusts for
delivery guarantees; here only what the demo shows a developer is checked. Waits are bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_broker import mosquitto_binary
from paho.mqtt import client as mqtt_client
from paho.mqtt.enums import CallbackAPIVersion

from edge.demo.fallback_broker import PROTOCOL, FallbackBroker, FallbackBrokerError
from edge.events.outbox import Outbox

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 10.0


def _path_without_mosquitto() -> str:
    """PATH minus every folder that holds a mosquitto."""
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not os.access(Path(d) / "mosquitto", os.X_OK)]
    return os.pathsep.join(keep)


def _demo(tmp_path: Path, models_dir: Path, timeout: float = 300, **env: str
          ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_FACE_")}
    base.update({"PATH": _path_without_mosquitto(), "EDGE_FACE_DEMO_DIR": str(tmp_path / "demo"),
                 "EDGE_FACE_MODELS__DIR": str(models_dir), "PYTHONUNBUFFERED": "1"})
    base.update(env)
    return subprocess.run([sys.executable, "-m", "edge.demo.run"], cwd=ROOT, env=base,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _messages(stdout: str) -> list[tuple[str, dict]]:
    """The ``topic  payload`` lines the demo's subscriber printed, in arrival order."""
    out = []
    for line in stdout.splitlines():
        topic, sep, payload = line.partition("  ")
        if sep and topic.startswith("edge-face/"):
            out.append((topic, json.loads(payload)))
    return out


def test_demo_without_mosquitto_uses_amqtt_and_every_event_arrives(
        tmp_path: Path, models_dir: Path) -> None:
    assert shutil.which("mosquitto", path=_path_without_mosquitto()) is None
    run = _demo(tmp_path, models_dir)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"== broker: amqtt (Python library, MQTT {PROTOCOL})" in run.stdout
    assert "mosquitto is not on PATH" in run.stdout
    person = next(line.split(":")[0].strip() for line in run.stdout.splitlines()
                  if line.endswith("templates") and line.startswith("   "))
    got = _messages(run.stdout)
    topics = [t for t, _ in got]
    device = "edge-face/demo-door"
    # Retained online first, the clean-shutdown offline last, every event of the clip between.
    assert topics[0] == f"{device}/status" and got[0][1]["state"] == "online"
    assert topics[-1] == f"{device}/status" and got[-1][1] == {
        **got[-1][1], "state": "offline", "reason": "shutdown"}
    events = [p for t, p in got if "/events/" in t]
    assert [(e["type"], e.get("state")) for e in events] == [
        ("camera", "open"), ("recognized", None), ("unknown", None)]
    assert len({e["event_id"] for e in events}) == len(events)
    recognized, unknown = events[1], events[2]
    assert recognized["person_id"] == person and recognized["label"] == "Sample Person A"
    assert unknown["person_id"] is None and "label" not in unknown
    assert "3 events (1 camera, 1 recognized, 1 unknown)" in run.stdout
    # Every event the daemon queued was acknowledged by the broker: nothing left behind.
    with Outbox(tmp_path / "demo" / "data" / "outbox.sqlite3") as outbox:
        assert outbox.depth() == 0


def test_demo_prefers_mosquitto_when_it_is_on_path(tmp_path: Path, models_dir: Path) -> None:
    """mosquitto is the first choice: with it on PATH the library broker is not started."""
    binary = Path(mosquitto_binary())
    run = _demo(tmp_path, models_dir,
                PATH=os.pathsep.join([str(binary.parent), _path_without_mosquitto()]))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"== broker: mosquitto ({binary})" in run.stdout
    assert "amqtt" not in run.stdout
    events = [p for t, p in _messages(run.stdout) if "/events/" in t]
    assert [e["type"] for e in events] == ["camera", "recognized", "unknown"]


def test_asking_for_mosquitto_when_it_is_hidden_fails_before_the_slow_steps(
        tmp_path: Path, models_dir: Path) -> None:
    run = _demo(tmp_path, models_dir, timeout=60, EDGE_FACE_DEMO_BROKER="mosquitto")
    assert run.returncode != 0 and run.stdout == ""
    assert run.stderr.startswith("EDGE_FACE_DEMO_BROKER=mosquitto but mosquitto is not on PATH")
    assert not (tmp_path / "demo").exists()


def test_bad_broker_choice_is_one_line_and_touches_nothing(tmp_path: Path,
                                                           models_dir: Path) -> None:
    run = _demo(tmp_path, models_dir, timeout=60, EDGE_FACE_DEMO_BROKER="embeded")
    assert run.returncode != 0 and run.stdout == ""
    assert run.stderr.strip() == ("EDGE_FACE_DEMO_BROKER='embeded': use one of auto, amqtt, "
                                  "mosquitto")
    assert not (tmp_path / "demo").exists()


def test_demo_refuses_to_empty_a_folder_that_is_not_its_own(tmp_path: Path,
                                                            models_dir: Path) -> None:
    precious = tmp_path / "demo" / "notes.txt"
    precious.parent.mkdir()
    precious.write_text("keep me")
    run = _demo(tmp_path, models_dir, timeout=60)
    assert run.returncode != 0 and "not an empty folder nor an earlier demo's" in run.stderr
    assert precious.read_text() == "keep me"


# ------------------------------------------------------------- the fallback broker itself


class _Peer:
    """A real paho 3.1.1 client recording what it receives."""

    def __init__(self, port: int, client_id: str | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cv = threading.Condition()
        self.client = mqtt_client.Client(CallbackAPIVersion.VERSION2,
                                         client_id=client_id or f"p-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.port = port

    def _on_message(self, c: object, u: object, msg: mqtt_client.MQTTMessage) -> None:
        with self._cv:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cv.notify_all()

    def connect(self) -> _Peer:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        return self

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(WAIT_S)

    def wait(self, count: int) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + WAIT_S
        with self._cv:
            while len(self.messages) < count and time.monotonic() < deadline:
                self._cv.wait(0.1)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker() -> Iterator[FallbackBroker]:
    with FallbackBroker() as b:
        yield b


def test_fallback_broker_routes_qos1_retains_and_sends_the_will(broker: FallbackBroker) -> None:
    sub = _Peer(broker.port).connect()
    sub.subscribe("door/#")
    pub = _Peer(broker.port)
    pub.client.will_set("door/status", b"offline", qos=1, retain=True)
    pub.connect()
    pub.client.publish("door/status", b"online", qos=1, retain=True).wait_for_publish(WAIT_S)
    for i in range(5):
        pub.client.publish("door/events", str(i).encode(), qos=1).wait_for_publish(WAIT_S)
    pub.client.socket().close()  # the device vanishes without a DISCONNECT
    got = sub.wait(7)
    assert [(t, p) for t, p, _ in got] == [("door/status", b"online")] + [
        ("door/events", str(i).encode()) for i in range(5)] + [("door/status", b"offline")]
    late = _Peer(broker.port).connect()
    late.subscribe("door/status")
    assert ("door/status", b"offline", True) in late.wait(1)
    for peer in (sub, late):
        peer.close()
    pub.client.loop_stop()


def test_fallback_broker_listens_on_loopback_only_and_frees_its_port() -> None:
    b = FallbackBroker().start()
    port = b.port
    assert port > 0
    socket.create_connection(("127.0.0.1", port), timeout=WAIT_S).close()
    b.stop()
    b.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_S).close()


def test_fallback_broker_port_in_use_is_a_clear_error(broker: FallbackBroker) -> None:
    with pytest.raises(FallbackBrokerError, match=f"cannot listen on 127.0.0.1:{broker.port}"):
        FallbackBroker(port=broker.port).start()


def test_fallback_broker_without_amqtt_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)  # import now raises ImportError
    with pytest.raises(FallbackBrokerError, match=r"needs amqtt .*edge-face\[demo\]"):
        FallbackBroker().start()

"""Publisher processes killed with SIGKILL: the Last Will fires, the outbox drains on restart.

The child process is this file run as a script (see ``_child``): it loads the real config from
``EDGE_FACE_*`` variables, opens the real outbox in the data dir and publishes through the real
Publisher, printing each event id only after ``publish_event`` returned (= committed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from mqtt_broker import (
    Broker,
    BrokerFactory,
    Subscriber,
    TcpProxy,
    broker_factory,
    mqtt_broker,
)

from edge.events.outbox import Outbox
from edge.events.publisher import DEFAULT_MAX_INFLIGHT

# pytest finds fixtures by name in this module's namespace; naming them marks the import used.
BROKER_FIXTURES = (broker_factory, mqtt_broker)

REPO = Path(__file__).resolve().parents[1]
DEVICE = "door-9"
STATUS = f"edge-face/{DEVICE}/status"
VALIDATOR = jsonschema.Draft202012Validator(
    json.loads((REPO / "docs" / "events.schema.json").read_text(encoding="utf-8")))


class Child:
    """One publisher process; reads its stdout line by line (bounded by the test timeout)."""

    def __init__(self, broker: Broker | TcpProxy, data_dir: Path, *args: str) -> None:
        config = data_dir / "config.toml"
        config.write_text("", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_FACE_")}
        env.update(
            EDGE_FACE_MQTT__HOST=broker.host,
            EDGE_FACE_MQTT__PORT=str(broker.port),
            EDGE_FACE_CONFIG=str(config),
            EDGE_FACE_DEVICE__ID=DEVICE,
            EDGE_FACE_STORAGE__DATA_DIR=str(data_dir),
            EDGE_FACE_LOGGING__FORMAT="json",
            PYTHONPATH=str(REPO),
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *args], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def lines_until(self, marker: str) -> list[str]:
        assert self.proc.stdout is not None
        lines: list[str] = []
        for raw in self.proc.stdout:
            line = raw.strip()
            if line == marker:
                return lines
            lines.append(line)
        self.proc.wait(timeout=10)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        pytest.fail(f"publisher child exited ({self.proc.returncode}) before {marker!r}:\n{err}")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL

    def close(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        return err


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        child.close()


def _first_seen(sub: Subscriber) -> list[str]:
    seen: dict[str, None] = {}
    for msg in sub.snapshot():
        if "/events/" in msg.topic:
            seen.setdefault(msg.json()["event_id"], None)
    return list(seen)


def test_last_will_says_offline_when_the_publisher_is_killed(
        mqtt_broker: Broker, children: list[Child], tmp_path: Path) -> None:
    sub = Subscriber(mqtt_broker, STATUS)
    child = Child(mqtt_broker, tmp_path, "--wait-connected", "--mode", "hang")
    children.append(child)
    child.lines_until("ready")
    online = sub.wait_for(lambda m: any(x.json()["state"] == "online" for x in m))
    assert online[-1].json()["state"] == "online"
    child.kill9()
    got = sub.wait_for(lambda m: any(x.json()["state"] == "offline" for x in m))
    will = got[-1].json()
    assert will["state"] == "offline" and will["reason"] == "will"
    VALIDATOR.validate(will)
    late = Subscriber(mqtt_broker, STATUS)
    retained = late.wait_for(lambda m: len(m) >= 1)[0]
    assert retained.retain and retained.json() == will
    sub.close()
    late.close()


def test_kill_9_with_broker_down_then_restart_drains_the_outbox(
        broker_factory: BrokerFactory, children: list[Child], tmp_path: Path) -> None:
    broker = broker_factory(start=False)
    first = Child(broker, tmp_path, "--emit", "20", "--mode", "hang")
    children.append(first)
    committed = first.lines_until("ready")
    assert len(committed) == 20
    first.kill9()

    with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        assert outbox.integrity_check() == "ok"
        assert [e.event_id for e in outbox.peek(limit=100)] == committed

    broker.start()
    sub = Subscriber(broker, f"edge-face/{DEVICE}/events/#")
    second = Child(broker, tmp_path, "--mode", "drain")
    children.append(second)
    assert second.lines_until("closed") == ["drained"]
    assert second.proc.wait(timeout=10) == 0
    sub.wait_for(lambda m: len(m) >= 20)
    assert _first_seen(sub) == committed
    with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        assert outbox.integrity_check() == "ok" and outbox.depth() == 0
    sub.close()


def test_kill_9_with_events_in_flight_then_restart(
        mqtt_broker: Broker, children: list[Child], tmp_path: Path) -> None:
    sub = Subscriber(mqtt_broker, f"edge-face/{DEVICE}/events/#")
    proxy = TcpProxy(mqtt_broker)
    first = Child(proxy, tmp_path, "--wait-connected", "--await-go", "--emit", "30",
                  "--mode", "hang")
    children.append(first)
    first.lines_until("connected")
    proxy.hold_replies()  # the broker gets every event, the publisher never hears PUBACK
    first.send("go")
    committed = first.lines_until("ready")
    # One send window reaches the broker (and the subscriber); the rest waits in the outbox.
    window = DEFAULT_MAX_INFLIGHT
    assert len(sub.wait_for(lambda m: len(m) >= window)) == window
    first.kill9()  # with a window of events delivered but unacknowledged
    proxy.close()
    with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        assert outbox.integrity_check() == "ok" and outbox.depth() == 30

    second = Child(mqtt_broker, tmp_path, "--mode", "drain")
    children.append(second)
    assert second.lines_until("closed") == ["drained"]
    got = sub.wait_for(lambda m: len(m) >= 30 + window)
    assert len(got) == 30 + window  # the window twice: at-least-once ...
    assert _first_seen(sub) == committed  # ... and complete, in order after dedupe by event_id
    sub.close()


# ------------------------------------------------------------------ the child process


def _child(argv: list[str]) -> int:
    from edge.config import load_config
    from edge.events.publisher import Publisher
    from edge.events.schema import unknown_event
    from edge.log import setup_logging

    parser = argparse.ArgumentParser()
    parser.add_argument("--emit", type=int, default=0)
    parser.add_argument("--wait-connected", action="store_true")
    parser.add_argument("--await-go", action="store_true")
    parser.add_argument("--mode", choices=("hang", "drain"), required=True)
    args = parser.parse_args(argv)

    config = load_config()
    setup_logging(config.logging)
    publisher = Publisher.from_config(config, reconnect_min_s=0.1, reconnect_max_s=1.0)
    publisher.start()
    if args.wait_connected:
        if not publisher.wait_connected(20):
            return 3
        print("connected", flush=True)
    if args.await_go and sys.stdin.readline().strip() != "go":
        return 4
    for i in range(args.emit):
        event = unknown_event(device_id=config.device.id, camera_id=config.camera.id,
                              track_id=i, similarity=None, decision="attempts", votes=1,
                              latency_ms=1.0)
        publisher.publish_event(event)
        print(event["event_id"], flush=True)
    if args.mode == "hang":
        print("ready", flush=True)
        while True:
            time.sleep(3600)
    drained = publisher.flush(30)
    publisher.close(timeout=5)
    print("drained" if drained else "not-drained", flush=True)
    print("closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))

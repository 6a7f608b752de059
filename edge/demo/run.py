"""``python -m edge.demo.run``: the whole product on this CPU, start to finish, on its own.

Enrolls the sample person (with a consent record), leaves the other sample person as the
stranger, starts a local broker on a free port, runs ``edge-face run`` on a clip made from the
portraits, and prints every MQTT message as a subscriber receives it. Stops when the clip ends.

The broker is mosquitto when it is installed, else the embedded Python broker
(:mod:`edge.demo.broker`), so that the demo needs nothing but Python. ``EDGE_FACE_DEMO_BROKER``
picks one explicitly: ``auto`` (the default), ``embedded`` or ``mosquitto``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt

from edge.demo.broker import EmbeddedBroker
from edge.demo.clip import write_clip

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "faces"
WORK = ROOT / ".demo"
DEVICE = "demo-door"
BROKER_ENV = "EDGE_FACE_DEMO_BROKER"
BROKER_CHOICES = ("auto", "embedded", "mosquitto")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "edge.cli", *args, "--json"], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"edge-face {' '.join(args)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout.splitlines()[-1])


def _find_mosquitto() -> str | None:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return found if Path(found).is_file() else None


def _broker_choice() -> str:
    """Checked before the slow steps, so a typo fails at once."""
    choice = os.environ.get(BROKER_ENV, "auto").strip().lower() or "auto"
    if choice not in BROKER_CHOICES:
        raise SystemExit(f"{BROKER_ENV}={choice!r}: use one of {', '.join(BROKER_CHOICES)}")
    return choice


@contextlib.contextmanager
def _broker(choice: str) -> Iterator[int]:
    """Run the demo's broker for the ``with`` block; yields its 127.0.0.1 port."""
    mosquitto = None if choice == "embedded" else _find_mosquitto()
    if mosquitto is None and choice == "mosquitto":
        raise SystemExit(f"{BROKER_ENV}=mosquitto but mosquitto is not installed")
    if mosquitto is None:
        with EmbeddedBroker("127.0.0.1", 0) as embedded:
            why = "as asked" if choice == "embedded" else "mosquitto is not installed"
            print(f"== broker: embedded Python MQTT broker on 127.0.0.1:{embedded.port} "
                  f"({why}; demo only)")
            yield embedded.port
        return
    port = _free_port()
    conf = WORK / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    print(f"== broker: mosquitto ({mosquitto}) on 127.0.0.1:{port}")
    try:
        yield port
    finally:
        broker.terminate()
        broker.wait(5)


def main() -> int:
    choice = _broker_choice()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_FACE_")}
    env.update({
        "EDGE_FACE_CONFIG": str(WORK / "config.toml"),
        "EDGE_FACE_DEVICE__ID": DEVICE,
        "EDGE_FACE_STORAGE__DATA_DIR": str(WORK / "data"),
        "EDGE_FACE_STORAGE__KEY_FILE": str(WORK / "keys" / "template.key"),
        "EDGE_FACE_MQTT__HOST": "127.0.0.1",
        "EDGE_FACE_EVENTS__INCLUDE_LABEL": "true",
        "EDGE_FACE_CAMERA__SOURCE": str(WORK / "door.avi"),
        "EDGE_FACE_CAMERA__REALTIME": "true",
        "EDGE_FACE_LOGGING__FORMAT": "text",
        "EDGE_FACE_LOGGING__LEVEL": "warning",
    })
    (WORK / "config.toml").write_text("# demo: everything comes from EDGE_FACE_* variables\n")
    print("== enrolling the sample person (with consent); the other portrait is a stranger")
    person = _cli(env, "person", "add", "--label", "Sample Person A", "--consent-by",
                  "Sample Person A", "--purpose", "demo door access")["id"]
    enrolled = _cli(env, "enroll", person, str(FIXTURES / "obama.jpg"),
                    str(FIXTURES / "obama2.jpg"))
    print(f"   {person}: {enrolled['templates_added']} templates")
    write_clip([FIXTURES / "obama3.jpg", FIXTURES / "biden.jpg"], WORK / "door.avi")
    print(f"== clip {WORK / 'door.avi'}: the enrolled person, then a stranger")
    with _broker(choice) as port:
        env["EDGE_FACE_MQTT__PORT"] = str(port)
        returncode, received = _run_daemon(env, port)
    events = [r for r in received if "/events/" in r]
    print(f"== done: daemon exit {returncode}, {len(events)} events")
    return returncode


def _run_daemon(env: dict[str, str], port: int) -> tuple[int, list[str]]:
    """Subscribe, run the daemon until the clip ends, return its exit code and what arrived."""
    received: list[str] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-subscriber")

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        line = f"{msg.topic}  {msg.payload.decode()}"
        received.append(line)
        print(line, flush=True)

    client.on_message = on_message
    for _ in range(50):
        try:
            client.connect("127.0.0.1", port)
            break
        except OSError:
            time.sleep(0.1)
    client.subscribe(f"edge-face/{DEVICE}/#", qos=1)
    client.loop_start()
    try:
        print(f"== daemon: edge-face run (broker 127.0.0.1:{port}); events as received:")
        daemon = subprocess.run([sys.executable, "-m", "edge.cli", "run"], env=env,
                                timeout=300, check=False)
        time.sleep(1.0)
    finally:
        client.loop_stop()
        client.disconnect()
    return daemon.returncode, received


if __name__ == "__main__":
    sys.exit(main())

"""``python -m edge.demo.run``: the whole product on this CPU, start to finish, on its own.

Enrolls the sample person (with a consent record), leaves the other sample person as the
stranger, starts a local broker on a free port, runs ``edge-face run`` on a clip made from the
portraits, and prints every MQTT message as a subscriber receives it. Stops when the clip ends.

The broker is mosquitto when it is on ``PATH``, else the ``amqtt`` library's broker
(:mod:`edge.demo.fallback_broker`, MQTT 3.1.1, so the daemon is told to speak 3.1.1), so that the
demo needs nothing but Python. ``EDGE_FACE_DEMO_BROKER`` picks one explicitly: ``auto`` (the
default), ``amqtt`` or ``mosquitto``. ``EDGE_FACE_DEMO_DIR`` moves the working folder (default
``.demo/`` in the repository; it is emptied first), so a test can run the demo in its temp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt

from edge.demo import fallback_broker
from edge.demo.clip import write_clip

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "faces"
DEVICE = "demo-door"
BROKER_ENV = "EDGE_FACE_DEMO_BROKER"
DIR_ENV = "EDGE_FACE_DEMO_DIR"
BROKER_CHOICES = ("auto", "amqtt", "mosquitto")
#: Where Debian and Ubuntu install mosquitto; often not on a normal user's PATH.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin")
MARKER = ".edge-face-demo"
CONNECT_TRIES = 50
#: Bound on waiting for the broker (a SUBACK, the daemon's last message).
WAIT_S = 10.0


def _cli(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "edge.cli", *args, "--json"], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"edge-face {' '.join(args)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout.splitlines()[-1])


def _find_mosquitto() -> str | None:
    """mosquitto on PATH only, so hiding it from PATH really selects the fallback (``make
    demo`` appends the sbin folders to PATH)."""
    return shutil.which("mosquitto")


def _sbin_hint() -> str:
    for folder in SBIN_DIRS:
        if os.access(Path(folder) / "mosquitto", os.X_OK):
            return f" (there is one in {folder}: add it to PATH to use it)"
    return ""


def _broker_choice() -> str:
    """Checked before the slow steps, so a typo or a missing mosquitto fails at once."""
    choice = os.environ.get(BROKER_ENV, "auto").strip().lower() or "auto"
    if choice not in BROKER_CHOICES:
        raise SystemExit(f"{BROKER_ENV}={choice!r}: use one of {', '.join(BROKER_CHOICES)}")
    if choice == "mosquitto" and _find_mosquitto() is None:
        raise SystemExit(f"{BROKER_ENV}=mosquitto but mosquitto is not on PATH{_sbin_hint()}")
    return choice


@contextlib.contextmanager
def _broker(choice: str, work: Path) -> Iterator[tuple[int, str]]:
    """Run the demo's broker for the ``with`` block; yields its 127.0.0.1 port and the MQTT
    version the daemon must speak to it."""
    mosquitto = None if choice == "amqtt" else _find_mosquitto()
    if mosquitto is None:
        why = "as asked" if choice == "amqtt" else f"mosquitto is not on PATH{_sbin_hint()}"
        try:
            library = fallback_broker.FallbackBroker().start()
        except fallback_broker.FallbackBrokerError as exc:
            raise SystemExit(f"no broker for the demo: {exc}") from None
        print(f"== broker: amqtt (Python library, MQTT {fallback_broker.PROTOCOL}) on "
              f"127.0.0.1:{library.port} ({why}; demo only)")
        try:
            yield library.port, fallback_broker.PROTOCOL
        finally:
            library.stop()
        return
    port = fallback_broker.free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    print(f"== broker: mosquitto ({mosquitto}) on 127.0.0.1:{port}")
    try:
        yield port, "5"
    finally:
        broker.terminate()
        broker.wait(5)


def _work_dir() -> Path:
    """The folder the demo empties and fills; a named one must be new, empty or an old demo's,
    so a mistyped ``EDGE_FACE_DEMO_DIR=$HOME`` deletes nothing."""
    default = ROOT / ".demo"
    work = Path(os.environ.get(DIR_ENV) or default).expanduser().resolve()
    if (work != default and work.exists()
            and (not work.is_dir() or (any(work.iterdir()) and not (work / MARKER).exists()))):
        raise SystemExit(f"{DIR_ENV}={work}: not an empty folder nor an earlier demo's; "
                         "name a new or empty one")
    return work


def main() -> int:
    choice = _broker_choice()
    work = _work_dir()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / MARKER).write_text("made by python -m edge.demo.run; emptied by the next run\n")
    # The demo's own settings replace the caller's, except where the models are.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EDGE_FACE_") or k == "EDGE_FACE_MODELS__DIR"}
    env.update({
        "EDGE_FACE_CONFIG": str(work / "config.toml"),
        "EDGE_FACE_DEVICE__ID": DEVICE,
        "EDGE_FACE_STORAGE__DATA_DIR": str(work / "data"),
        "EDGE_FACE_STORAGE__KEY_FILE": str(work / "keys" / "template.key"),
        "EDGE_FACE_MQTT__HOST": "127.0.0.1",
        "EDGE_FACE_EVENTS__INCLUDE_LABEL": "true",
        "EDGE_FACE_CAMERA__SOURCE": str(work / "door.avi"),
        "EDGE_FACE_CAMERA__REALTIME": "true",
        "EDGE_FACE_LOGGING__FORMAT": "text",
        "EDGE_FACE_LOGGING__LEVEL": "warning",
    })
    (work / "config.toml").write_text("# demo: everything comes from EDGE_FACE_* variables\n")
    print("== enrolling the sample person (with consent); the other portrait is a stranger")
    person = _cli(env, "person", "add", "--label", "Sample Person A", "--consent-by",
                  "Sample Person A", "--purpose", "demo door access")["id"]
    enrolled = _cli(env, "enroll", person, str(FIXTURES / "obama.jpg"),
                    str(FIXTURES / "obama2.jpg"))
    print(f"   {person}: {enrolled['templates_added']} templates")
    write_clip([FIXTURES / "obama3.jpg", FIXTURES / "biden.jpg"], work / "door.avi")
    print(f"== clip {work / 'door.avi'}: the enrolled person, then a stranger")
    with _broker(choice, work) as (port, protocol):
        env["EDGE_FACE_MQTT__PORT"] = str(port)
        env["EDGE_FACE_MQTT__PROTOCOL"] = protocol
        returncode, received = _run_daemon(env, port)
    kinds = Counter(topic.rsplit("/", 1)[-1] for topic in received if "/events/" in topic)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    print(f"== done: daemon exit {returncode}, {sum(kinds.values())} events ({summary or 'none'})")
    return returncode


def _connect(client: mqtt.Client, port: int) -> None:
    """Connect and subscribe before the daemon starts, so the subscriber misses nothing: a
    mosquitto just spawned may need a moment to listen (bounded retries)."""
    for _ in range(CONNECT_TRIES):
        try:
            client.connect("127.0.0.1", port)
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise SystemExit(f"the demo's broker on 127.0.0.1:{port} does not accept connections")
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe(f"edge-face/{DEVICE}/#", qos=1)
    client.loop_start()
    if not subscribed.wait(WAIT_S):
        client.loop_stop()
        raise SystemExit(f"the demo's broker on 127.0.0.1:{port} did not confirm the "
                         "subscription")


def _state(payload: str) -> str | None:
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    return doc.get("state") if isinstance(doc, dict) else None


def _run_daemon(env: dict[str, str], port: int) -> tuple[int, list[str]]:
    """Subscribe, run the daemon until the clip ends, return its exit code and what arrived.

    The daemon's last message is its retained ``offline`` status (a clean stop, acknowledged by
    the broker before it exits); the subscriber waits for that one, not for a fixed time, so
    no event sent before it is cut off on a slow machine."""
    received: list[str] = []
    offline = threading.Event()
    status = f"edge-face/{DEVICE}/status"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-subscriber")

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        received.append(msg.topic)
        text = msg.payload.decode()
        print(f"{msg.topic}  {text}", flush=True)
        if msg.topic == status and _state(text) == "offline":
            offline.set()  # the broker is new: this is the daemon's last word (or its Will)

    client.on_message = on_message
    _connect(client, port)
    try:
        print(f"== daemon: edge-face run (broker 127.0.0.1:{port}); events as received:")
        daemon = subprocess.run([sys.executable, "-m", "edge.cli", "run"], env=env,
                                timeout=300, check=False)
        if not offline.wait(WAIT_S):
            print(f"== the daemon's offline status did not arrive within {WAIT_S:.0f} s",
                  flush=True)
    finally:
        client.loop_stop()
        client.disconnect()
    return daemon.returncode, received


if __name__ == "__main__":
    sys.exit(main())

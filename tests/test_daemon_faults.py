"""The daemon under faults, as a real process: kill -9, signals, sd_notify, credentials, cameras.

Everything is real: ``edge-face run`` as a subprocess with the prepared models, a gallery with
one enrolled fixture person, a clip written by OpenCV, mosquitto (with a password file and a
throw-away TLS PKI where needed), an AF_UNIX datagram socket standing in for systemd, and the
SQLite files inspected with ``sqlite3`` after the process is gone. Waits are bounded and poll
the daemon's JSON log lines or the subscriber; nothing asserts a tight timing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mqtt_broker import (  # noqa: F401 (broker_factory and mqtt_broker are pytest fixtures)
    Broker,
    BrokerFactory,
    Received,
    Subscriber,
    TlsFiles,
    broker_factory,
    make_password_file,
    make_tls_files,
    mqtt_broker,
)

from edge.demo.clip import write_clip

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "fault-door"
START_TIMEOUT_S = 120.0  # model loading on a busy 2-core machine
Record = dict[str, Any]


# -- the enrolled gallery and the clip, made once per module -------------------------------------

@dataclass(frozen=True)
class Enrolled:
    data_dir: Path
    key_dir: Path
    person: str
    clip: Path


def _cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "edge.cli", *args, "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _clean_env() -> dict[str, str]:
    drop = ("EDGE_FACE_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM", "LISTEN_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
             fixture_dir: Path) -> Enrolled:
    """Enroll one person through the CLI once; each test gets its own copy of the files."""
    base = tmp_path_factory.mktemp("enrolled")
    (base / "config.toml").write_text(f'[models]\ndir = "{models_dir}"\n')
    env = dict(_clean_env(), EDGE_FACE_CONFIG=str(base / "config.toml"),
               EDGE_FACE_STORAGE__DATA_DIR=str(base / "data"),
               EDGE_FACE_STORAGE__KEY_FILE=str(base / "keys" / "k"))
    person = _cli(env, "person", "add", "--label", "A", "--consent-by", "A",
                  "--purpose", "door")["id"]
    _cli(env, "enroll", person, str(fixture_dir / "obama.jpg"), str(fixture_dir / "obama2.jpg"))
    # One enrolled visitor, then a stranger: a recognized and an unknown decision per pass.
    clip = write_clip([fixture_dir / "obama3.jpg", fixture_dir / "biden.jpg"], base / "door.avi")
    return Enrolled(base / "data", base / "keys", person, clip)


# -- a daemon process whose JSON log lines the test can wait on ----------------------------------

class Daemon:
    """``edge-face run`` as a child; stderr is read on a thread and parsed line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run"], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.records: list[Record] = []
        self._eof = False
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            record = None
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
            with self._cv:
                self.lines.append(line)
                if record is not None:
                    self.records.append(record)
                self._cv.notify_all()
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    def logs(self, msg: str, **fields: Any) -> list[Record]:
        """Records whose message contains ``msg`` and whose fields equal ``fields``."""
        with self._cv:
            return [r for r in self.records if msg in r.get("msg", "")
                    and all(r.get(k) == v for k, v in fields.items())]

    def wait_until(self, predicate: Callable[[], bool], what: str,
                   timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        with self._cv:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    break
                self._cv.wait(min(remaining, 0.5))
        if not predicate():
            state = "exited" if self._eof else "still running"
            pytest.fail(f"daemon ({state}) never logged {what}; stderr tail:\n{self.tail()}")

    def wait_log(self, msg: str, count: int = 1, timeout: float = START_TIMEOUT_S,
                 **fields: Any) -> list[Record]:
        self.wait_until(lambda: len(self.logs(msg, **fields)) >= count,
                        f"{count} x {msg!r} {fields or ''}", timeout)
        return self.logs(msg, **fields)

    def ready(self) -> Daemon:
        self.wait_log("daemon ready")
        return self

    def identity_events_queued(self) -> int:
        return len([r for r in self.logs("event queued") if r.get("logger") == "edge.daemon.app"])

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def tail(self, n: int = 40) -> str:
        with self._cv:
            return "".join(self.lines[-n:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Door:
    """One test's device: its own data dir, key, config file and environment."""

    root: Path
    person: str
    clip: Path
    base_env: dict[str, str]
    config_text: str
    daemons: list[Daemon]

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    def write_config(self, extra: str = "") -> None:
        self.config_path.write_text(self.config_text + extra, encoding="utf-8")

    def env(self, broker: Broker | None = None, **overrides: str) -> dict[str, str]:
        """The environment; ``overrides`` are ``SECTION__KEY`` names without the prefix."""
        env = dict(self.base_env)
        if broker is not None:
            env.update(broker.env())
        env.update({f"EDGE_FACE_{k}": v for k, v in overrides.items()})
        return env

    def start(self, env: dict[str, str]) -> Daemon:
        daemon = Daemon(env)
        self.daemons.append(daemon)
        return daemon

    def run(self, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge.cli", "run"], env=env,
                              capture_output=True, text=True, timeout=timeout)

    def outbox(self) -> list[tuple[int, str, str, bytes]]:
        """(seq, event_id, topic, payload) still waiting, in send order."""
        with contextlib.closing(sqlite3.connect(self.data_dir / "outbox.sqlite3")) as conn:
            return conn.execute(
                "SELECT seq, event_id, topic, payload FROM outbox ORDER BY seq").fetchall()


@pytest.fixture
def door(tmp_path: Path, enrolled: Enrolled, models_dir: Path) -> Iterator[Door]:
    shutil.copytree(enrolled.data_dir, tmp_path / "data")
    shutil.copytree(enrolled.key_dir, tmp_path / "keys")
    text = f'[models]\ndir = "{models_dir}"\n'
    env = dict(_clean_env(), **{
        "EDGE_FACE_CONFIG": str(tmp_path / "config.toml"),
        "EDGE_FACE_DEVICE__ID": DEVICE,
        "EDGE_FACE_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "EDGE_FACE_STORAGE__KEY_FILE": str(tmp_path / "keys" / "k"),
        "EDGE_FACE_CAMERA__SOURCE": str(enrolled.clip),
        "EDGE_FACE_CAMERA__REALTIME": "false",
        "EDGE_FACE_LOGGING__FORMAT": "json",
    })
    d = Door(tmp_path, enrolled.person, enrolled.clip, env, text, [])
    d.write_config()
    yield d
    for daemon in d.daemons:  # a failed test must not leave a daemon behind
        daemon.kill()


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def event_ids(messages: list[Received]) -> list[str]:
    """Event ids in arrival order, deduplicated the way a consumer does (first one wins)."""
    seen: dict[str, None] = {}
    for m in messages:
        if "/events/" in m.topic:
            seen.setdefault(m.json()["event_id"], None)
    return list(seen)


def statuses(messages: list[Received]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic.endswith("/status")]


# -- 1. kill -9 while the broker is down --------------------------------------------------------

def test_kill_9_mid_clip_with_broker_down_then_restart_drains_in_order(
        door: Door, mqtt_broker: Broker) -> None:  # noqa: F811
    mqtt_broker.stop()
    daemon = door.start(door.env(mqtt_broker, CAMERA__LOOP="true"))
    # A recognized and an unknown decision committed while no broker can take them.
    daemon.wait_until(lambda: daemon.identity_events_queued() >= 2, "two identity events")
    daemon.send(signal.SIGKILL)
    assert daemon.wait(timeout=10) == -signal.SIGKILL

    for db in (door.data_dir / "gallery.db", door.data_dir / "outbox.sqlite3"):
        assert integrity(db) == "ok", db
    committed = door.outbox()
    types = [json.loads(payload)["type"] for _, _, _, payload in committed]
    assert types[0] == "camera"  # the "open" report came first
    assert types.count("recognized") >= 1 and types.count("unknown") >= 1
    assert len(types) - 1 >= daemon.identity_events_queued() >= 2

    mqtt_broker.start()
    sub = Subscriber(mqtt_broker, f"edge-face/{DEVICE}/#")
    try:
        # Restarted as an enrollment station (no camera): nothing new, only the backlog.
        again = door.start(door.env(mqtt_broker, CAMERA__SOURCE="none")).ready()
        wanted = [event_id for _, event_id, _, _ in committed]
        got = sub.wait_for(lambda ms: set(wanted) <= set(event_ids(ms)), timeout=30)
        again.send(signal.SIGTERM)
        assert again.wait(timeout=15) == 0, again.tail()
    finally:
        sub.close()
    assert event_ids(got) == wanted  # every committed event, once after dedupe, in order
    topics = {m.json()["event_id"]: m.topic for m in got if "/events/" in m.topic}
    assert [topics[i] for i in wanted] == [topic for _, _, topic, _ in committed]
    assert door.outbox() == []
    for db in (door.data_dir / "gallery.db", door.data_dir / "outbox.sqlite3"):
        assert integrity(db) == "ok", db


# -- 2. SIGTERM --------------------------------------------------------------------------------

def test_sigterm_flushes_publishes_offline_and_exits_0(door: Door,
                                                        mqtt_broker: Broker) -> None:  # noqa: F811
    sub = Subscriber(mqtt_broker, f"edge-face/{DEVICE}/#")
    try:
        daemon = door.start(door.env(mqtt_broker, CAMERA__LOOP="true")).ready()
        daemon.wait_until(lambda: daemon.identity_events_queued() >= 2, "two identity events")
        t0 = time.monotonic()
        daemon.send(signal.SIGTERM)
        code = daemon.wait(timeout=10)
        elapsed = time.monotonic() - t0
        messages = sub.wait_for(
            lambda ms: any(s["state"] == "offline" for s in statuses(ms)), timeout=10)
    finally:
        sub.close()
    assert code == 0, daemon.tail()
    assert elapsed < 10
    states = statuses(messages)
    assert states[0]["state"] == "online"
    assert states[-1]["state"] == "offline" and states[-1]["reason"] == "shutdown"
    # Every event the daemon queued reached the broker before it said goodbye.
    stopped = daemon.wait_log("daemon stopped")[-1]
    identity = [m for m in messages if m.topic.endswith(("/recognized", "/unknown"))]
    assert len({m.json()["event_id"] for m in identity}) == stopped["events"] >= 2
    assert daemon.logs("mqtt publisher closed", drained=True)
    assert door.outbox() == []
    # The offline status is retained: a consumer that connects later still learns it.
    late = Subscriber(mqtt_broker, f"edge-face/{DEVICE}/status")
    try:
        retained = late.wait_for(lambda ms: len(ms) >= 1, timeout=10)
    finally:
        late.close()
    assert retained and retained[0].retain
    assert retained[0].json()["state"] == "offline"
    assert retained[0].json()["reason"] == "shutdown"


# -- 3. SIGHUP ----------------------------------------------------------------------------------

def test_sighup_reloads_thresholds_and_refuses_a_broken_file(door: Door,
                                                            mqtt_broker: Broker) -> None:  # noqa: F811
    daemon = door.start(door.env(mqtt_broker, CAMERA__SOURCE="none")).ready()

    # A threshold applies at once; an [mqtt] change is named as needing a restart.
    door.write_config("[matching]\nthreshold = 0.45\n[mqtt]\nkeepalive = 45\n")
    daemon.send(signal.SIGHUP)
    daemon.wait_log("config reloaded")
    assert daemon.logs("matching thresholds changed", threshold=0.45)
    restart = daemon.wait_log("need a restart")
    assert restart[-1]["sections"] == "mqtt"

    # An unknown key: refused, named, and the daemon keeps the config it has.
    door.write_config("[matching]\nthreshold = 0.5\nbogus = 1\n")
    daemon.send(signal.SIGHUP)
    refused = daemon.wait_log("reload refused")
    assert "bogus" in refused[-1]["error"]

    # Values that are each in range but contradict each other: refused as a whole, nothing of
    # it applied (the threshold must not change while the tracking part is rejected).
    door.write_config("[matching]\nthreshold = 0.55\n[tracking]\nvotes_needed = 3\n"
                      "max_attempts = 2\n")
    daemon.send(signal.SIGHUP)
    refused = daemon.wait_log("reload refused", count=2)
    assert "max_attempts" in refused[-1]["error"]
    assert daemon.proc.poll() is None

    # Still alive and still reloading: the next good file applies.
    door.write_config("[matching]\nthreshold = 0.4\n")
    daemon.send(signal.SIGHUP)
    daemon.wait_log("config reloaded", count=2)
    assert [r["threshold"] for r in daemon.logs("matching thresholds changed")] == [0.45, 0.4]
    assert len(daemon.logs("need a restart")) == 2  # keepalive went back to the default
    daemon.send(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0, daemon.tail()


# -- 4. systemd notify --------------------------------------------------------------------------

def test_sd_notify_datagrams_on_a_real_socket(door: Door, mqtt_broker: Broker) -> None:  # noqa: F811
    path = door.root / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    received: list[tuple[float, str]] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            received.append((time.monotonic(), data.decode()))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    # No WATCHDOG_PID: the child's pid is unknown before it is spawned, and a Notifier without
    # one takes WATCHDOG_USEC as its own (what systemd means for a service's main process).
    env = door.env(mqtt_broker, CAMERA__LOOP="true")
    env.update(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="1000000")
    try:
        daemon = door.start(env).ready()
        # Find READY=1 on the socket (the log line comes right after the datagram).
        deadline = time.monotonic() + 10
        while not any(m.startswith("READY=1") for _, m in received):
            assert time.monotonic() < deadline, received
            time.sleep(0.05)
        t_ready = next(t for t, m in received if m.startswith("READY=1"))
        time.sleep(3.0)
        t_term = time.monotonic()
        daemon.send(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0, daemon.tail()
        time.sleep(0.3)
    finally:
        done.set()
        listener.join(timeout=5)
        sock.close()

    messages = [m for _, m in received]
    kinds = [m.split("=", 1)[0] for m in messages]
    assert kinds[0] == "EXTEND_TIMEOUT_USEC" and int(messages[0].split("=")[1]) > 0
    assert kinds.index("READY") < kinds.index("WATCHDOG")
    assert kinds[-1] == "STOPPING"
    # Half of a 1 s watchdog is a pet every 0.5 s; over a known 3 s run at least 3 arrive
    # even on a loaded machine (about 6 expected), and they come from the running loop.
    pets = [t for t, m in received if m == "WATCHDOG=1" and t_ready <= t <= t_term]
    assert len(pets) >= 3, messages
    status = [m for m in messages if m.startswith("STATUS=") and "frames=" in m]
    assert status and all("outbox=" in m for m in status)
    assert "READY=1\nSTATUS=" in next(m for m in messages if m.startswith("READY=1"))


# -- 5. credentials and TLS ---------------------------------------------------------------------

@pytest.fixture
def secure_broker(tmp_path: Path,
                  broker_factory: BrokerFactory) -> tuple[Broker, TlsFiles]:  # noqa: F811
    """mosquitto with TLS (server certificate for 127.0.0.1) and a password file."""
    tls = make_tls_files(tmp_path / "pki")
    passwords = make_password_file(tmp_path / "passwd", {"door": "s3cret", "test": "t3st"})
    return broker_factory(password_file=passwords, tls=tls), tls


def _secure_env(door: Door, broker: Broker, tls: TlsFiles, password: str,
                **more: str) -> dict[str, str]:
    return door.env(broker, MQTT__USERNAME="door", MQTT__PASSWORD=password, MQTT__TLS="true",
                    MQTT__CA_FILE=str(tls.ca), MQTT__CERT_FILE=str(tls.client_cert),
                    MQTT__KEY_FILE=str(tls.client_key), **more)


def test_tls_and_password_broker_gets_the_events(
        door: Door, secure_broker: tuple[Broker, TlsFiles]) -> None:
    broker, tls = secure_broker
    sub = Subscriber(broker, f"edge-face/{DEVICE}/#", tls=tls, username="test", password="t3st")
    try:
        proc = door.run(_secure_env(door, broker, tls, "s3cret"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        messages = sub.wait_for(lambda ms: len(event_ids(ms)) >= 3
                                and any(s["state"] == "offline" for s in statuses(ms)))
    finally:
        sub.close()
    kinds = [m.json()["type"] for m in messages if "/events/" in m.topic]
    assert kinds == ["camera", "recognized", "unknown"]
    schema = json.loads((ROOT / "docs" / "events.schema.json").read_text())
    for m in messages:
        jsonschema.validate(m.json(), schema)
    assert door.outbox() == []


def test_wrong_password_is_a_clear_error_not_a_crash(
        door: Door, secure_broker: tuple[Broker, TlsFiles]) -> None:
    broker, tls = secure_broker
    daemon = door.start(_secure_env(door, broker, tls, "wrong", CAMERA__LOOP="true")).ready()
    refused = daemon.wait_log("refused the connection")
    assert refused[0]["level"] == "error"
    assert "user name or password" in refused[0]["msg"].lower() \
        or "not authori" in refused[0]["msg"].lower()
    assert "wrong" not in json.dumps(daemon.records)  # the password is never logged
    daemon.wait_until(lambda: daemon.identity_events_queued() >= 2, "two identity events")
    # It keeps retrying: the broker refuses it again after the first refusal (backoff 1 s, 2 s).
    deadline = time.monotonic() + 20
    while broker.log_file.read_text(errors="replace").count("not authorised") < 2:
        assert time.monotonic() < deadline, "the daemon did not retry the connection"
        time.sleep(0.2)
    assert daemon.proc.poll() is None
    queued = daemon.identity_events_queued()
    daemon.send(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0, daemon.tail()
    left = door.outbox()
    identity = [row for row in left if not row[2].endswith("/camera")]
    assert len(identity) >= queued >= 2  # nothing was lost, nothing pretended to be delivered
    assert daemon.logs("mqtt publisher closed", drained=False)


# -- 6. a camera that is not there --------------------------------------------------------------

def test_lost_camera_is_reported_retried_and_survivable(door: Door,
                                                        mqtt_broker: Broker) -> None:  # noqa: F811
    missing = "/dev/video97"
    assert not Path(missing).exists()
    sub = Subscriber(mqtt_broker, f"edge-face/{DEVICE}/events/camera")
    try:
        daemon = door.start(door.env(mqtt_broker, CAMERA__SOURCE=missing)).ready()
        got = sub.wait_for(lambda ms: len(ms) >= 1)
        # Backoff 0.5 s, then 1 s: the second retry proves it keeps trying and stays up.
        daemon.wait_log("camera unavailable; retrying", count=3, timeout=20)
        assert daemon.proc.poll() is None
        daemon.send(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0, daemon.tail()
    finally:
        sub.close()
    event = got[0].json()
    assert event["type"] == "camera" and event["state"] == "lost" and event["attempts"] == 1
    assert len(sub.messages) == 1  # one report per outage, not one per retry
    assert missing not in got[0].payload.decode()


# -- 7. start-up errors -------------------------------------------------------------------------

def _fails_cleanly(proc: subprocess.CompletedProcess[str]) -> str:
    """The error is one line on stderr, and nothing slow (model loading) ran before it."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("edge-face: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


def test_misspelt_override_stops_start_up_with_78(door: Door) -> None:
    proc = door.run(door.env(MQTT__HOTS="x"), timeout=60)
    assert proc.returncode == 78
    err = _fails_cleanly(proc)
    assert "EDGE_FACE_MQTT__HOTS" in err and "'hots'" in err


def test_unknown_key_in_the_file_stops_start_up_with_78(door: Door) -> None:
    door.write_config("[mqtt]\nhots = \"x\"\n")
    proc = door.run(door.env(), timeout=60)
    assert proc.returncode == 78
    assert "'hots'" in _fails_cleanly(proc)


def test_missing_models_and_missing_clip_are_clear_errors(door: Door) -> None:
    empty = door.root / "no-models"
    empty.mkdir()
    proc = door.run(door.env(MODELS__DIR=str(empty)), timeout=60)
    assert proc.returncode != 0
    err = _fails_cleanly(proc)
    assert str(empty) in err or "edge-face models" in err

    # A clip that is not there will not appear by itself: refused before the models load.
    proc = door.run(door.env(CAMERA__SOURCE=str(door.root / "gone.avi")), timeout=120)
    assert proc.returncode == 66
    assert "gone.avi" in _fails_cleanly(proc)


def test_no_camera_in_any_spelling_keeps_the_daemon_up(door: Door,
                                                       mqtt_broker: Broker) -> None:  # noqa: F811
    # "None" is the camera factory's "none" too; as an enrollment station the daemon must stay
    # up until it is told to stop, not treat a camera-less source as a clip that ended.
    daemon = door.start(door.env(mqtt_broker, CAMERA__SOURCE=" None ")).ready()
    door.write_config("[matching]\nthreshold = 0.4\n")
    daemon.send(signal.SIGHUP)  # answered only by a loop that is still running
    daemon.wait_log("config reloaded", timeout=20)
    assert daemon.proc.poll() is None
    daemon.send(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0, daemon.tail()
    assert not daemon.logs("camera stream ended") and not daemon.logs("camera state")


# -- 8. nothing about a stranger is kept --------------------------------------------------------

def test_a_stranger_leaves_no_trace_in_the_gallery_or_the_outbox(door: Door,
                                                                 mqtt_broker: Broker) -> None:  # noqa: F811
    gallery = door.data_dir / "gallery.db"

    def rows() -> tuple[list[tuple[str, str]], list[str]]:
        with contextlib.closing(sqlite3.connect(gallery)) as conn:
            return (conn.execute("SELECT id, person_id FROM templates ORDER BY id").fetchall(),
                    [r[0] for r in conn.execute("SELECT id FROM persons")])

    templates_before, persons_before = rows()
    assert {p for _, p in templates_before} == {door.person} and len(templates_before) == 2
    mqtt_broker.stop()  # the events stay in the outbox, where the test can read them
    proc = door.run(door.env(mqtt_broker), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert rows() == (templates_before, persons_before)  # no shadow template, no shadow person
    payloads = [json.loads(p) for _, _, _, p in door.outbox()]
    assert [p["type"] for p in payloads] == ["camera", "recognized", "unknown"]
    stranger = payloads[2]
    assert stranger["person_id"] is None and "label" not in stranger
    for payload in payloads:
        assert all(v is None or isinstance(v, (str, int, float, bool))
                   for v in payload.values()), payload
    # The only files the daemon keeps are the gallery and the outbox (with their SQLite journals).
    names = {p.name for p in door.data_dir.rglob("*") if p.is_file()}
    allowed = {f"{db}{suffix}" for db in ("gallery.db", "outbox.sqlite3")
               for suffix in ("", "-wal", "-shm", "-journal")}
    assert names <= allowed, names - allowed

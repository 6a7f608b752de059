"""``/readyz`` follows what the device can do: models, camera (or none), broker."""

from __future__ import annotations

from pathlib import Path

from api_daemon import ApiDaemon, make_daemon
from mqtt_broker import BrokerFactory, broker_factory  # noqa: F401 (fixture)


def wait_ready(daemon: ApiDaemon, want: bool, timeout: float = 30.0) -> dict:
    with daemon.client() as anon:
        r = anon.get("/readyz")
        import time

        deadline = time.monotonic() + timeout
        while (r.status_code == 200) != want and time.monotonic() < deadline:
            time.sleep(0.1)
            r = anon.get("/readyz")
        assert r.status_code == (200 if want else 503), r.text
        return dict(r.json())


def test_readiness_follows_the_broker(tmp_path: Path, models_dir: Path,
                                      broker_factory: BrokerFactory) -> None:  # noqa: F811
    broker = broker_factory()
    daemon = make_daemon(tmp_path, models_dir, broker).start(wait_ready=True)
    try:
        ready = wait_ready(daemon, True)
        assert ready == {"ready": True, "reasons": [],
                         "checks": {"models": "ok", "camera": "none", "broker": "ok"}}
        broker.stop()
        down = wait_ready(daemon, False)
        assert down["ready"] is False and down["checks"]["models"] == "ok"
        assert down["checks"]["broker"] != "ok" and any("broker" in r for r in down["reasons"])
        with daemon.client() as anon:  # alive all along: a broker outage is no reason to restart
            assert anon.get("/healthz").status_code == 200
        broker.start()
        assert wait_ready(daemon, True)["checks"]["broker"] == "ok"
    finally:
        daemon.stop()


def test_a_camera_that_does_not_deliver_is_not_ready(tmp_path: Path, models_dir: Path,
                                                broker_factory: BrokerFactory) -> None:  # noqa: F811
    broker = broker_factory()
    daemon = make_daemon(tmp_path, models_dir, broker,
                         EDGE_FACE_CAMERA__SOURCE="rtsp://127.0.0.1:9/door").start()
    try:
        down = wait_ready(daemon, False)
        assert down["checks"]["camera"] != "ok" and down["checks"]["broker"] == "ok"
        assert any("camera" in r for r in down["reasons"])
    finally:
        daemon.stop()

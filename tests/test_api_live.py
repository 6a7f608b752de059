"""The API and the camera pipeline in one daemon: shared gallery, shared matcher, shared CPU.

A generated clip loops in real time: the same visitor (a portrait never enrolled) walks up to
the door every 0.9 s. Enrolling them through the API must turn the next visit into a
``recognized`` event; deleting them must stop that at once; a burst of identify requests must
not take the camera's frames (the pool answers 429 instead, and the pipeline keeps its rate).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from api_daemon import ApiDaemon, make_daemon, new_person
from mqtt_broker import Broker, Received, Subscriber

from edge.demo.clip import FPS, SIZE

FACES = Path(__file__).parent / "fixtures" / "faces"
VISIT_S, GAP_S = 0.6, 0.3


def standing_visits(portrait: Path, out: Path) -> Path:
    """One visit, the visitor standing still at the door, then an empty corridor (MJPG AVI).

    Still, not walking: at this pace a walk moves the face further than a track follows.
    """
    w, h = SIZE
    person = cv2.imread(str(portrait))
    scale = 0.8 * h / person.shape[0]
    person = cv2.resize(person, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ph, pw = person.shape[:2]
    empty = np.full((h, w, 3), 110, np.uint8)
    visit = empty.copy()
    visit[(h - ph) // 2:(h - ph) // 2 + ph, (w - pw) // 2:(w - pw) // 2 + pw] = person
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (w, h))
    for frame, seconds in ((visit, VISIT_S), (empty, GAP_S)):
        for _ in range(round(seconds * FPS)):
            writer.write(frame)
    writer.release()
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
         module_broker: Broker) -> Iterator[ApiDaemon]:
    workdir = tmp_path_factory.mktemp("live")
    clip = standing_visits(FACES / "obama3.jpg", workdir / "door.avi")
    daemon = make_daemon(workdir, models_dir, module_broker,
                         EDGE_FACE_CAMERA__SOURCE=str(clip), EDGE_FACE_CAMERA__LOOP="true",
                         EDGE_FACE_CAMERA__REALTIME="true",
                         EDGE_FACE_TRACKING__MAX_MISSED_FRAMES="2",
                         EDGE_FACE_TRACKING__RECHECK_S="0.1",
                         EDGE_FACE_EVENTS__COOLDOWN_S="0",
                         EDGE_FACE_API__AUTH_FAILURES_PER_MINUTE="1000")
    daemon.start(wait_ready=True)
    yield daemon
    daemon.stop()


def events(messages: list[Received], kind: str) -> list[dict]:
    return [m.json() for m in messages if m.topic.endswith(f"/events/{kind}")]


def event_time(event: dict) -> float:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def frames(api: httpx.Client) -> float:
    text = api.get("/metrics").text
    match = re.search(r"^edge_face_frames_total (\S+)$", text, re.MULTILINE)
    assert match, text[:500]
    return float(match.group(1))


def test_enrolled_through_the_api_recognised_by_the_camera_at_once(live: ApiDaemon,
                                                                   module_broker: Broker) -> None:
    sub = Subscriber(module_broker, "edge-face/api-door/events/#")
    try:
        # The pipeline sees the visitor and, not knowing them, says so.
        assert events(sub.wait_for(lambda m: len(events(m, "unknown")) >= 2), "unknown")
        with live.admin() as api:
            pid = new_person(api, "Walks by")
            r = api.post(f"/v1/persons/{pid}/faces", files=[
                ("image", ("obama.jpg", (FACES / "obama.jpg").read_bytes(), "image/jpeg"))])
            assert r.status_code == 201, r.text
            enrolled = time.time()
            seen = sub.wait_for(lambda m: any(e["person_id"] == pid
                                              for e in events(m, "recognized")), timeout=15)
            first = next(e for e in events(seen, "recognized") if e["person_id"] == pid)
            latency = event_time(first) - enrolled
            # The next visit starts within VISIT_S + GAP_S; a loaded CI machine gets slack.
            print(f"recognised {latency:.2f} s after enrollment")  # shown with pytest -s
            assert latency < 3.0, f"recognised {latency:.2f} s after enrollment"

            receipt = api.delete(f"/v1/persons/{pid}")
            assert receipt.status_code == 200 and receipt.json()["person_id"] == pid
            deleted = time.time()
        # Three more visits: each is unknown again, none is recognised.
        later = sub.wait_for(lambda m: sum(event_time(e) > deleted + 0.2
                                           for e in events(m, "unknown")) >= 3, timeout=15)
        assert sum(event_time(e) > deleted + 0.2 for e in events(later, "unknown")) >= 3
        assert not [e for e in events(later, "recognized") if event_time(e) > deleted + 0.2]
    finally:
        sub.close()


def test_identify_bursts_do_not_take_the_cameras_frames(live: ApiDaemon) -> None:
    photo = (FACES / "obama2.jpg").read_bytes()
    token = live.token("burst", "read")
    with live.client(token) as api:
        start, t0 = frames(api), time.monotonic()
        time.sleep(4.0)
        unloaded = (frames(api) - start) / (time.monotonic() - t0)
        assert unloaded > 2.0, "the pipeline is not running"

        statuses: list[int] = []
        retry_after: list[str] = []
        lock = threading.Lock()

        def caller(stop_at: float) -> None:
            # Fifty callers are fifty clients, each with its own connection, as on a real
            # network; one httpx.Client shared by fifty threads races on its own pool.
            mine: list[httpx.Response] = []
            with live.client(token) as own:
                while time.monotonic() < stop_at:
                    r = own.post("/v1/identify",
                                 files=[("image", ("v.jpg", photo, "image/jpeg"))])
                    mine.append(r)
                    if r.status_code == 429:  # wait as told, capped, like a polite client
                        time.sleep(min(0.05, float(r.headers["retry-after"])))
            with lock:
                statuses.extend(r.status_code for r in mine)
                retry_after.extend(r.headers["retry-after"] for r in mine
                                   if r.status_code == 429)

        start, t0 = frames(api), time.monotonic()
        with ThreadPoolExecutor(50) as pool:
            for done in [pool.submit(caller, t0 + 5.0) for _ in range(50)]:
                done.result()
        loaded = (frames(api) - start) / (time.monotonic() - t0)

    print(f"pipeline {unloaded:.1f} fps alone, {loaded:.1f} fps under identify bursts; "
          f"{statuses.count(200)} answered, {statuses.count(429)} refused (429)")
    assert not [s for s in statuses if s >= 500], statuses
    assert set(statuses) <= {200, 429} and 200 in statuses
    assert 429 in statuses and all(int(v) >= 1 for v in retry_after)
    assert loaded > unloaded / 2, f"pipeline {loaded:.1f} fps under load vs {unloaded:.1f}"
    with live.client() as anon:
        assert anon.get("/readyz").status_code == 200


def test_metrics_describe_the_running_pipeline(live: ApiDaemon) -> None:
    with live.client(live.token("scraper", "read")) as api:
        assert api.get("/v1/persons").status_code == 200  # one request, on this connection
        text = api.get("/metrics").text
    for name in ("edge_face_frames_total", "edge_face_faces_total", "edge_face_embeddings_total",
                 'edge_face_decisions_total{decision="unknown"}', "edge_face_outbox_depth",
                 'edge_face_stage_seconds_bucket{le="0.005",stage="detect"}',
                 "edge_face_camera_frames_captured_total", "edge_face_camera_frames_dropped_total",
                 "edge_face_camera_reconnects_total", "edge_face_events_total",
                 'edge_face_stage_seconds_count{stage="embed"}',
                 'edge_face_api_request_seconds_count{route="/v1/persons"}',
                 "edge_face_camera_up 1.0", "edge_face_mqtt_connected 1.0",
                 'edge_face_api_requests_total{method="POST",route="/v1/identify",status="200"}',
                 "edge_face_work_refused_total"):
        assert name in text, name
    assert "obama" not in text and "p_" not in text  # no files, no person ids

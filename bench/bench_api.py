"""Issue 9's benchmark: the admin API under concurrent load, and the camera's frame rate meanwhile.

Why this way:

- The daemon is the real ``edge-face run`` process (camera pipeline, MQTT publisher and uvicorn
  in one process), on a generated clip played in real time at 30 fps with a visitor coming and
  going, so the pipeline detects, tracks and embeds all along, as at a door.
- The load comes from a separate process (this script re-run with ``--load``): N threads, each
  with its own keep-alive connection, send requests back to back for a fixed time and record
  each one's latency and status. Latency is measured per request on the client (p50, p99 of the
  answered ones); throughput counts answered requests per second; 429s (the bounded worker
  pool refusing) are counted apart, never as answers.
- The peer is the pipeline itself: its frames per second from ``/metrics`` alone (no load) and
  during each load level, in the same run, as a ratio. The issue's bar: above half.
- The box is small (2 cores) and the load generator is a Python process on the same cores, so
  what is measured is the whole device under that pressure, not the API's ceiling.

Usage (from the repo root): ``.venv/bin/python bench/bench_api.py [--write] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import results_md
from bench_daemon import BenchError, Mosquitto, machine, pcts

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "fixtures" / "faces"
SECTION = "## Admin API (issue 9)"
FPS, SIZE = 30, (1280, 720)
PERSONS = 500  # in the gallery: GET /v1/persons pages through real rows


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the load generator (a separate process) ---------------------------------------------------
def load(url: str, token: str, kind: str, threads: int, seconds: float) -> dict[str, Any]:
    photo = (FACES / "obama2.jpg").read_bytes()
    results: list[tuple[float, int]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        mine: list[tuple[float, int]] = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as client:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                if kind == "persons":
                    r = client.get("/v1/persons", params={"limit": 50})
                else:
                    r = client.post("/v1/identify",
                                    files=[("image", ("v.jpg", photo, "image/jpeg"))])
                mine.append((time.perf_counter() - t0, r.status_code))
                if r.status_code == 429:  # do as a client should: wait as told (capped)
                    time.sleep(min(0.05, float(r.headers.get("retry-after", "1"))))
        with lock:
            results.extend(mine)

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    span = time.monotonic() - started
    ok = [lat for lat, status in results if status == 200]
    p50, _, p99 = pcts(ok) if ok else (float("nan"),) * 3
    return {"kind": kind, "threads": threads, "seconds": span, "answered": len(ok),
            "refused": sum(1 for _, s in results if s == 429),
            "errors": sum(1 for _, s in results if s >= 500 or s not in (200, 429)),
            "throughput": len(ok) / span, "p50_ms": p50 * 1000, "p99_ms": p99 * 1000}


# -- the device ------------------------------------------------------------------------------
def door_clip(out: Path, seconds: float = 20.0) -> Path:
    """A visitor (obama3.jpg) standing at the door 2 s, away 0.5 s, over and over."""
    w, h = SIZE
    person = cv2.imread(str(FACES / "obama3.jpg"))
    scale = 0.6 * h / person.shape[0]
    person = cv2.resize(person, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ph, pw = person.shape[:2]
    y = np.linspace(70, 150, h, dtype=np.float32)[:, None]
    empty = np.dstack([np.repeat(y, w, 1).astype(np.uint8)] * 3)
    visit = empty.copy()
    visit[(h - ph) // 2:(h - ph) // 2 + ph, (w - pw) // 2:(w - pw) // 2 + pw] = person
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (w, h))
    if not writer.isOpened():
        raise BenchError(f"OpenCV cannot write {out}")
    for k in range(int(seconds * FPS)):
        writer.write(visit if (k % int(2.5 * FPS)) < 2 * FPS else empty)
    writer.release()
    return out


@dataclass
class Device:
    env: dict[str, str]
    url: str
    process: subprocess.Popen[bytes]
    token: str

    def frames(self) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=30,
                         headers={"Authorization": f"Bearer {self.token}"}).text
        found = re.search(r"^edge_face_frames_total (\S+)$", text, re.MULTILINE)
        if not found:
            raise BenchError("no edge_face_frames_total in /metrics")
        return float(found.group(1))


def cli(env: dict[str, str], *args: str) -> Any:
    out = subprocess.run([sys.executable, "-m", "edge.cli", *args, "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise BenchError(f"edge-face {' '.join(args)}: {out.stderr.strip()}")
    return json.loads(out.stdout)


@contextlib.contextmanager
def device(root: Path, broker: Mosquitto) -> Iterator[Device]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_FACE_")}
    env.update({
        "EDGE_FACE_DEVICE__ID": "bench-door",
        "EDGE_FACE_STORAGE__DATA_DIR": str(root / "data"),
        "EDGE_FACE_STORAGE__KEY_FILE": str(root / "keys" / "template.key"),
        "EDGE_FACE_CAMERA__SOURCE": str(door_clip(root / "door.avi")),
        "EDGE_FACE_CAMERA__LOOP": "true", "EDGE_FACE_CAMERA__REALTIME": "true",
        "EDGE_FACE_EVENTS__COOLDOWN_S": "0", "EDGE_FACE_LOGGING__LEVEL": "warning",
        "EDGE_FACE_MQTT__HOST": "127.0.0.1", "EDGE_FACE_MQTT__PORT": str(broker.port),
        "EDGE_FACE_API__ENABLED": "true", "EDGE_FACE_API__PORT": str(port),
        "EDGE_FACE_API__AUTH_FAILURES_PER_MINUTE": "100000",
    })
    token = cli(env, "token", "create", "--name", "bench", "--scope", "admin")["token"]
    log = (root / "daemon.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run"], env=env, stdout=log,
                            stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise BenchError(f"daemon exited: {(root / 'daemon.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchError("daemon not ready in 120 s")
            time.sleep(0.2)
        yield Device(env, url, proc, token)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill_gallery(dev: Device) -> None:
    """PERSONS persons (the first enrolled from obama.jpg), made through the API itself."""
    headers = {"Authorization": f"Bearer {dev.token}"}
    consent = {"given_by": "bench", "purpose": "benchmark"}
    with httpx.Client(base_url=dev.url, headers=headers, timeout=60) as api:
        first = api.post("/v1/persons", json={"label": "enrolled", "consent": consent}).json()
        r = api.post(f"/v1/persons/{first['id']}/faces", files=[
            ("image", ("obama.jpg", (FACES / "obama.jpg").read_bytes(), "image/jpeg"))])
        if r.status_code != 201:
            raise BenchError(f"enrollment failed: {r.text}")
        for i in range(PERSONS - 1):
            api.post("/v1/persons", json={"label": f"person {i}", "consent": consent})


def fps_alone(dev: Device, seconds: float) -> float:
    start, t0 = dev.frames(), time.monotonic()
    time.sleep(seconds)
    return (dev.frames() - start) / (time.monotonic() - t0)


def under_load(dev: Device, kind: str, threads: int, seconds: float) -> dict[str, Any]:
    start, t0 = dev.frames(), time.monotonic()
    out = subprocess.run([sys.executable, __file__, "--load", dev.url, dev.token, kind,
                          str(threads), str(seconds)], capture_output=True, text=True,
                         timeout=seconds + 120)
    fps = (dev.frames() - start) / (time.monotonic() - t0)
    if out.returncode != 0:
        raise BenchError(f"load generator failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    result["fps"] = fps
    return result


# -- report ------------------------------------------------------------------------------------
def render(cmd: str, alone: list[float], rows: list[dict[str, Any]], took: float,
           workers: str) -> str:
    base = sum(alone) / len(alone)
    lines = [
        SECTION, "",
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}. "
        f"Whole run {took / 60:.1f} min.", "",
        f"Command: `{cmd}`", "",
        f"Device: `edge-face run` with the API on, camera = a generated 1280x720 clip at {FPS} "
        "fps in real time (a visitor 2 s at the door, 0.5 s away, looped), "
        f"[events] cooldown_s = 0, {PERSONS} persons in the gallery (one enrolled), "
        f"[api] workers = {workers}, queue = 4. Load: a separate Python process, N threads "
        "each with one keep-alive connection, requests back to back; a 429 waits 50 ms.", "",
        f"Camera pipeline alone: **{base:.1f} fps** (runs: "
        f"{', '.join(f'{a:.1f}' for a in alone)}).", "",
        "| load | threads | answered/s | p50 ms | p99 ms | 429s | errors | pipeline fps | "
        "fps vs alone |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        what = "GET /v1/persons?limit=50" if r["kind"] == "persons" else "POST /v1/identify"
        lines.append(f"| {what} | {r['threads']} | {r['throughput']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['refused']} | {r['errors']} | {r['fps']:.1f} | "
                     f"{r['fps'] / base:.2f} |")
    worst = min(r["fps"] / base for r in rows)
    lines += ["", "### Reading", "",
              f"- The pipeline kept at least {worst:.0%} of its unloaded frame rate at every "
              "load level (the issue's bar is 50%).",
              "- Identify shares the bounded worker pool (niced below the camera): beyond "
              "`workers` running and `queue` waiting, requests get 429 with Retry-After at once "
              "instead of queueing behind the camera; that is the 429 column.",
              "- The load generator runs on the same two cores as the daemon, so throughput is "
              "the device's under that contention, not the API's ceiling.",
              "- A first run of this bench found every keep-alive answer ~45 ms late (one "
              "client's GET /v1/persons p50 51 ms): the API's socket lacked TCP_NODELAY; fixed "
              "in `edge/api/server.py` (`bind`), guarded by a test.",]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="replace the section in RESULTS.md")
    p.add_argument("--seconds", type=float, default=10.0, help="per load level")
    p.add_argument("--load", nargs=5, metavar=("URL", "TOKEN", "KIND", "THREADS", "SECONDS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.load:
        url, token, kind, threads, seconds = args.load
        print(json.dumps(load(url, token, kind, int(threads), float(seconds))))
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "mosquitto")
        try:
            with device(root, broker) as dev:
                say("filling the gallery")
                fill_gallery(dev)
                time.sleep(2.0)
                alone = [fps_alone(dev, args.seconds)]
                rows = []
                for kind, levels in (("persons", (1, 8, 32)), ("identify", (1, 4, 16, 50))):
                    for threads in levels:
                        say(f"{kind} x{threads}")
                        rows.append(under_load(dev, kind, threads, args.seconds))
                        say(json.dumps(rows[-1]))
                alone.append(fps_alone(dev, args.seconds))
        finally:
            broker.stop()
    cmd = " ".join([".venv/bin/python bench/bench_api.py", *(shlex.quote(a) for a in
                                                             (argv or sys.argv[1:]))])
    text = render(cmd, alone, rows, time.monotonic() - started,
                  f"0 (= {max(1, (os.cpu_count() or 2) - 1)})")
    print(text)
    if args.write:
        results_md.write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

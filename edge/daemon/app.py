"""``edge-face run``: camera to MQTT events, one decision per visit.

Why this shape: capture runs on its own thread and hands over only the freshest frame, so a
slow stage drops frames instead of adding latency; detection runs every frame (cheap), while
alignment, quality and embedding run only for tracks that need them (new, better shot, no decision
yet), and every face that needs an embedding in a frame goes through SFace in one batch. The
watchdog is petted from this loop, so a hung pipeline gets the process killed by systemd.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

from edge import __version__
from edge.api.readiness import Readiness
from edge.camera import Frame, LatestFrameReader, NullSource, make_source
from edge.config import Config, load_config
from edge.daemon.faults import HangSwitch
from edge.daemon.notify import BuildKeepalive, Notifier
from edge.engine import FaceEngine
from edge.events.publisher import Publisher
from edge.events.schema import camera_event, identity_event, status_online
from edge.gallery.errors import PersonNotFound
from edge.gallery.store import GalleryStore
from edge.gallery.sweeper import ConsentSweeper
from edge.inference.engine_cache import build_hook
from edge.metrics import Metrics, Reading
from edge.quality import reasons
from edge.recognition import LiveMatcher
from edge.tracking.decision import TrackDecider
from edge.tracking.tracker import IouTracker

if TYPE_CHECKING:
    from edge.daemon.admin import AdminApi

log = logging.getLogger(__name__)

#: How often changes written by other processes (CLI, API) are pulled into the matcher.
REFRESH_S = 1.0
STATUS_S = 5.0
SHUTDOWN_FLUSH_S = 5.0
CAMERA_OPEN_WAIT_S = 10.0
#: A camera that delivered no processed frame for this long is reported not ready.
CAMERA_STALE_S = 5.0
#: Frame rate assumed for a replayed source that does not report one.
DEFAULT_REPLAY_FPS = 25.0


@dataclass
class Counters:
    frames: int = 0
    faces: int = 0
    embedded: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: {"recognized": 0, "unknown": 0})

    @property
    def events(self) -> int:
        """Identity events queued: one per decision."""
        return sum(self.decisions.values())


class Daemon:
    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = Notifier()
        self.notifier.extend_timeout(120_000_000)  # model loading on a cold Jetson is slow
        # A misspelt source or a missing clip is known without touching a camera: refuse it
        # before the slow model loading, not after. "none" in any spelling means no camera.
        source = make_source(config.camera)
        # A first TensorRT engine build takes minutes: systemd is told so while it runs.
        with build_hook(BuildKeepalive(self.notifier)):
            self.engine = FaceEngine(config)
        self.store = GalleryStore.from_config(config)
        self.live = LiveMatcher(self.store, self.engine.embedder_id, config)
        self.sweeper = ConsentSweeper(self.store)
        self.tracker = IouTracker.from_config(config.tracking)
        self.decider = TrackDecider.from_config(config, config.camera.id)
        online = status_online(device_id=config.device.id, version=__version__,
                               backend=self.engine.backend,
                               detector_model=self.engine.detector_id,
                               embedder_model=self.engine.embedder_id)
        self.publisher = Publisher.from_config(config, online_payload=online)
        self.counters = Counters()
        self.metrics = Metrics()
        self._last_frame_t: float | None = None
        self._status_t, self._status_frames = time.monotonic(), 0
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.reader: LatestFrameReader | None = None
        if not isinstance(source, NullSource):
            self.reader = LatestFrameReader(source, on_state=self._camera_state)
        # A clip replayed as fast as possible runs on its own clock (see ``_replay_time``).
        self._source = source
        self._replay = self.reader is not None and not source.realtime
        self._replay_t0: float | None = None
        self.api: AdminApi | None = None
        if config.api.enabled:
            from edge.daemon.admin import AdminApi

            self.api = AdminApi(self)
        self.metrics.watch(self._reading)
        self.exit_code = 0
        self._hang = HangSwitch()  # test only (see edge/daemon/faults.py); inert in production

    # -- lifecycle ---------------------------------------------------------------------------
    def install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self._stop.set()

        def reload(signum: int, frame: FrameType | None) -> None:
            self._reload.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        self.sweeper.start()
        self.publisher.start()
        if self.api is not None:
            try:
                self.api.start()
            except BaseException:
                self.publisher.close(0.5)
                self.sweeper.stop()
                raise
        state = "no camera"
        if self.reader is not None:
            self.reader.start()
            # READY means "models loaded and camera open". A camera that does not open in time
            # is still retried forever, but the service must not sit in "activating" until
            # systemd's start timeout kills and restarts it: report ready, and say why not quite.
            opened = self.reader.wait_open(CAMERA_OPEN_WAIT_S)
            state = "camera open" if opened else "camera unavailable, retrying"
        self.notifier.ready(f"running, {state} ({self.config.camera.id})")
        log.info("daemon ready", extra={"camera": self.config.camera.id,
                                        "backend": self.engine.backend,
                                        "templates": len(self.live.matcher)})
        try:
            self._loop()
        finally:
            self._shutdown()
        return self.exit_code

    def _loop(self) -> None:
        interval = self.notifier.watchdog_interval()
        next_pet = next_refresh = next_status = time.monotonic()
        while not self._stop.is_set():
            self._hang.check()
            now = time.monotonic()
            if interval is not None and now >= next_pet:
                self.notifier.watchdog()
                next_pet = now + interval
            if now >= next_refresh:
                self.live.refresh()
                next_refresh = now + REFRESH_S
            if now >= next_status:
                self._status()
                next_status = now + STATUS_S
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()
            if self.api is not None and not self.api.alive:
                # The operators' only way in is gone: exit non-zero, so systemd restarts us.
                log.error("admin API server died; stopping so the service is restarted")
                self.exit_code = 1
                break
            if self.reader is None:
                self._stop.wait(0.5)
                continue
            frame = self.reader.get(timeout=0.5)
            if frame is None:
                if self.reader.finished:
                    log.info("camera stream ended")
                    break
                continue
            self.process(frame.pixels, frame.t_capture,
                         now=self._replay_time(frame) if self._replay else None)

    def _shutdown(self) -> None:
        self.notifier.stopping()
        if self.api is not None:
            self.api.stop()  # no new requests; running ones finish against an open store
        if self.reader is not None:
            self.reader.close()
        self.sweeper.stop()
        self.publisher.close(SHUTDOWN_FLUSH_S)
        self.store.close()
        log.info("daemon stopped", extra={"frames": self.counters.frames,
                                          "events": self.counters.events})

    def _do_reload(self) -> None:
        """SIGHUP: thresholds, votes and cooldowns apply at once; other keys need a restart.

        A file is applied whole or not at all: whatever can refuse it is checked before anything
        changes, so a refused reload leaves the door running exactly as it was.
        """
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            TrackDecider.from_config(new, new.camera.id)  # refuses votes/attempts that conflict
        except Exception as exc:  # a broken file must not kill a running door
            log.error("reload refused; keeping the running config", extra={"error": str(exc)})
        else:
            self.live.matcher.configure(new.matching)
            self.tracker.reconfigure(new.tracking)
            self.decider.reconfigure(new)
            changed = [s for s in ("mqtt", "camera", "models", "inference", "storage", "device",
                                   "api")
                       if getattr(new, s) != getattr(self.config, s)]
            if changed:
                log.warning("reload: these sections need a restart",
                            extra={"sections": ",".join(changed)})
            self.config = new
            log.info("config reloaded", extra={"source": new.source,
                                               "threshold": new.matching.threshold,
                                               "cooldown_s": new.events.cooldown_s})
        self.notifier.ready("reloaded")

    def _replay_time(self, frame: Frame) -> float:
        """Frame ``i`` of a fast replay happens at ``i / fps`` on the clip's own timeline.

        Why: rechecks, votes and cooldowns are timed, and on the wall clock a fast CPU sees a
        visit as shorter than a slow CPU does (fewer rechecks, so a stranger's track can end
        before its ``unknown`` decision). On the clip's clock a replayed incident, a demo or a
        test decides the same on every machine, as it would have in front of the camera.
        """
        fps = self._source.fps or DEFAULT_REPLAY_FPS
        if self._replay_t0 is None:
            self._replay_t0 = frame.t_capture - frame.index / fps
        return self._replay_t0 + frame.index / fps

    def _status(self) -> None:
        depth = self.publisher.stats().outbox_depth
        dropped = self.reader.stats.dropped if self.reader is not None else 0
        now = time.monotonic()
        fps = (self.counters.frames - self._status_frames) / max(1e-6, now - self._status_t)
        self._status_t, self._status_frames = now, self.counters.frames
        self.notifier.status(f"fps={fps:.1f} frames={self.counters.frames} "
                             f"faces={self.counters.faces} events={self.counters.events} "
                             f"outbox={depth} dropped={dropped}")

    def readiness(self) -> Readiness:
        """``/readyz``: models are loaded once this object exists; camera and broker are live."""
        checks = {"models": "ok"}
        reasons: list[str] = []
        if self.reader is None:
            checks["camera"] = "none"
        else:
            state = self.reader.stats.state
            fresh = (self._last_frame_t is not None
                     and time.monotonic() - self._last_frame_t <= CAMERA_STALE_S)
            if state in ("open", "reopened") and fresh:
                checks["camera"] = "ok"
            else:
                why = f"camera {state}" if state not in ("open", "reopened") else (
                    f"no frame processed in the last {CAMERA_STALE_S:.0f} s")
                checks["camera"] = why
                reasons.append(why)
        if self.publisher.connected:
            checks["broker"] = "ok"
        else:
            checks["broker"] = "not connected"
            reasons.append("broker not connected")
        return Readiness(checks, reasons)

    def _reading(self) -> Reading:
        """The daemon's counters for one Prometheus scrape (read, not copied, each time)."""
        pub = self.publisher.stats()
        cam = self.reader.stats if self.reader is not None else None
        pool = self.api.pool.stats() if self.api is not None else None
        c = self.counters
        return Reading(
            frames=c.frames, faces=c.faces, embeddings=c.embedded,
            decisions=dict(c.decisions),
            camera_captured=cam.captured if cam else None,
            camera_dropped=cam.dropped if cam else None,
            camera_outages=cam.outages if cam else None,
            camera_up=(cam.state in ("open", "reopened")) if cam else None,
            outbox_depth=pub.outbox_depth, outbox_dropped=pub.dropped,
            mqtt_connected=pub.connected, mqtt_published=pub.published,
            mqtt_connects=pub.connects, templates=len(self.live.matcher),
            pool_running=pool.running if pool else 0, pool_waiting=pool.waiting if pool else 0,
            pool_refused=pool.refused if pool else 0)

    def _camera_state(self, state: str, attempts: int) -> None:
        try:
            self.publisher.publish_event(camera_event(device_id=self.config.device.id,
                                                      camera_id=self.config.camera.id,
                                                      state=state, attempts=attempts))
        except Exception as exc:  # the capture thread must never die on a report
            log.error("camera event not queued", extra={"error": str(exc)})

    # -- the pipeline ------------------------------------------------------------------------
    def process(self, pixels: np.ndarray, t_capture: float, now: float | None = None) -> None:
        """One frame through the pipeline; ``now`` is the clip's clock in a fast replay, else the
        frame's capture time."""
        on_clip_clock = now is not None
        # Every timing rule runs on the capture clock, so latency counts from the moment the
        # face's first frame was captured, detection time included.
        now = t_capture if now is None else now
        stage = self.metrics.stage
        t0 = time.perf_counter()
        self.counters.frames += 1
        faces = self.engine.detect(pixels, rescue=False)
        t1 = time.perf_counter()
        stage["detect"].observe(t1 - t0)
        self.counters.faces += len(faces)
        update = self.tracker.update(faces, now)
        candidates = [(t, f) for t, f in zip(update.tracks, faces, strict=True)
                      if t.decision is None]
        t2 = time.perf_counter()
        stage["track"].observe(t2 - t1)
        if candidates:
            crops = self.engine.measure(pixels, [f for _, f in candidates])
            wanted = [(t, f, c) for (t, f), c in zip(candidates, crops, strict=True)
                      if not reasons(f.quality, self.config.quality)
                      and self.tracker.needs_embedding(t, f.quality["score"], now)]
            t3 = time.perf_counter()
            stage["align"].observe(t3 - t2)
            if wanted:
                faces_w = [f for _, f, _ in wanted]
                self.engine.embed_into(faces_w, [c for _, _, c in wanted])
                t4 = time.perf_counter()
                results = self.live.matcher.search(np.stack([f.embedding for f in faces_w]))
                stage["embed"].observe(t4 - t3)
                stage["match"].observe(time.perf_counter() - t4)
                self.counters.embedded += len(wanted)
                for (track, face, _), result in zip(wanted, results, strict=True):
                    self.tracker.mark_embedded(track, face.quality["score"], now)
                    decision = self.decider.add(track, result, now)
                    if decision is not None and decision.emit:
                        self._emit(decision, on_clip_clock)
                for face in faces_w:
                    face.embedding = None  # nothing about a face outlives what needs it
        self.decider.refresh(self.tracker.tracks, now)
        stage["frame"].observe(time.perf_counter() - t0)
        self._last_frame_t = time.monotonic()  # the clock readiness compares against

    def _emit(self, decision: Any, on_clip_clock: bool = False) -> None:
        # A fast replay has no wall-clock latency to speak of: report the clip time from the
        # face's first frame to the deciding frame instead.
        end = decision.decided_monotonic if on_clip_clock else time.monotonic()
        latency_ms = max(0.0, (end - decision.first_seen_monotonic) * 1000.0)
        label = None
        if decision.decision == "recognized" and self.config.events.include_label:
            # A person may have no label, or be deleted between the match and now: the event
            # then goes out without one (it used to stop the daemon).
            with contextlib.suppress(PersonNotFound):
                label = self.store.get_person(decision.person_id).label
        payload = identity_event(
            "recognized" if decision.decision == "recognized" else "unknown",
            device_id=self.config.device.id, camera_id=self.config.camera.id,
            track_id=decision.track_id,
            person_id=decision.person_id if decision.decision == "recognized" else None,
            similarity=decision.similarity,
            decision=decision.reason,
            votes=decision.votes, latency_ms=latency_ms, label=label,
            include_label=self.config.events.include_label and label is not None)
        self.publisher.publish_event(payload)
        self.counters.decisions[payload["type"]] += 1
        log.info("event queued", extra={"type": payload["type"], "track_id": decision.track_id,
                                        "latency_ms": payload["latency_ms"]})

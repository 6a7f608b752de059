"""Prometheus metrics of one daemon: the pipeline, the camera, the outbox and the API.

Why a registry per daemon and collectors read at scrape time: counters the daemon already keeps
(frames, faces, embeddings, the reader's drops and outages, the publisher's outbox) are read
when Prometheus asks, so the per-frame loop pays nothing for them; only the latency histograms
are observed in the loop (about a microsecond each). A registry of its own keeps two daemons in
one test process, or a daemon and a library user, from mixing their numbers.

Nothing here is labelled with a person id, a label or anything else about a face.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "edge_face"
#: Pipeline stages are milliseconds on a Jetson, tens of milliseconds on a small CPU.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
API_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Reading:
    """One scrape's worth of the daemon's own counters (``None`` where there is no camera)."""

    frames: int
    faces: int
    embeddings: int
    decisions: dict[str, int]  # identity events queued, by kind
    camera_captured: int | None
    camera_dropped: int | None
    camera_outages: int | None
    camera_up: bool | None
    outbox_depth: int
    outbox_dropped: int
    mqtt_connected: bool
    mqtt_published: int
    mqtt_connects: int
    templates: int
    pool_running: int
    pool_waiting: int
    pool_refused: int


class _Collector:
    def __init__(self, read: Callable[[], Reading]) -> None:
        self._read = read

    def describe(self) -> list[Metric]:
        return []  # names are not known before the first read; nothing can clash with them

    def collect(self) -> Iterator[Metric]:
        r = self._read()

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        yield counter("frames", "Frames through the pipeline", r.frames)
        yield counter("faces", "Faces detected", r.faces)
        yield counter("embeddings", "Faces embedded (SFace runs)", r.embeddings)
        decisions = CounterMetricFamily(f"{PREFIX}_decisions", "Decisions per visit",
                                        labels=["decision"])
        for decision in ("recognized", "unknown"):
            decisions.add_metric([decision], r.decisions.get(decision, 0))
        yield decisions
        yield counter("events", "Events committed to the outbox", sum(r.decisions.values()))
        if r.camera_captured is not None:
            yield counter("camera_frames_captured", "Frames read from the camera",
                          r.camera_captured)
            yield counter("camera_frames_dropped",
                          "Frames overwritten before the pipeline took them", r.camera_dropped or 0)
            yield counter("camera_reconnects", "Camera outages (each ends in a reconnect)",
                          r.camera_outages or 0)
            yield gauge("camera_up", "1 while the camera delivers", float(bool(r.camera_up)))
        yield gauge("outbox_depth", "Events waiting for the broker's acknowledgement",
                    r.outbox_depth)
        yield counter("outbox_dropped", "Events removed by the outbox bounds undelivered",
                      r.outbox_dropped)
        yield gauge("mqtt_connected", "1 while connected to the broker",
                    float(r.mqtt_connected))
        yield counter("mqtt_published", "PUBLISH packets sent", r.mqtt_published)
        yield counter("mqtt_connects", "Successful broker connections", r.mqtt_connects)
        yield gauge("gallery_templates", "Templates in the live matcher", r.templates)
        yield gauge("work_running", "Identify/enroll jobs running", r.pool_running)
        yield gauge("work_waiting", "Identify/enroll jobs waiting", r.pool_waiting)
        yield counter("work_refused", "Identify/enroll jobs refused (429)", r.pool_refused)


class Metrics:
    """The registry, the histograms the loop observes, and the API's request counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stage_seconds = Histogram(
            f"{PREFIX}_stage_seconds", "Time per pipeline stage and frame",
            ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self.api_requests = Counter(
            f"{PREFIX}_api_requests", "Admin API requests", ["method", "route", "status"],
            registry=self.registry)
        self.api_seconds = Histogram(
            f"{PREFIX}_api_request_seconds", "Admin API request duration", ["route"],
            buckets=API_BUCKETS, registry=self.registry)
        # Children resolved once: ``labels()`` is a dict lookup under a lock, per call.
        self.stage = {name: self.stage_seconds.labels(name)
                      for name in ("detect", "track", "align", "embed", "match", "frame")}

    def watch(self, read: Callable[[], Reading]) -> None:
        """Report the daemon's own counters, read by ``read`` at every scrape."""
        self.registry.register(_Collector(read))  # type: ignore[arg-type]

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.api_requests.labels(method, route, str(status)).inc()
        self.api_seconds.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

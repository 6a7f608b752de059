"""The admin API attached to a running daemon: one gallery, one live matcher, two doors in.

The API gets the daemon's store and live matcher, so its writes reach the camera pipeline on the
next frame. What it does not share is the compute: with a camera running, identify and enroll
run on their own copy of the models (one-thread sessions, so a request's work stays on the
worker's own thread) in a bounded pool of low-priority workers (``edge.workpool``), and the
door keeps its frame rate under any load of uploads. An enrollment station (no camera) has no
frames to protect: the API then uses the daemon's models at normal priority.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edge.api.app import create_app
from edge.api.context import ApiContext
from edge.api.routes import events
from edge.api.server import ApiServer
from edge.api.tokens import TokenStore
from edge.cpus import available_cpus
from edge.engine import FaceEngine
from edge.recognition import Recognizer
from edge.service import GalleryService
from edge.workpool import WorkerPool

if TYPE_CHECKING:
    from edge.daemon.app import Daemon

log = logging.getLogger(__name__)

#: How much nicer than the camera pipeline the API's workers run (0..19; 10 = a tenth the weight).
WORKER_NICE = 10


class AdminApi:
    def __init__(self, daemon: Daemon) -> None:
        config = daemon.config
        camera = daemon.reader is not None
        workers = config.api.workers or max(1, available_cpus() - 1)
        # jobs=2: each model on one thread (see FaceEngine); the daemon's engine stays as it is.
        engine = FaceEngine(config, jobs=2) if camera else daemon.engine
        self.pool = WorkerPool(workers, config.api.queue, nice=WORKER_NICE if camera else 0,
                               name="edge-api-work")
        self.gallery = GalleryService(config, store=daemon.store)
        self.tokens = TokenStore.from_config(config)
        recognizer = Recognizer(config, daemon.store, engine, live=daemon.live)
        context = ApiContext(config=config, gallery=self.gallery, recognizer=recognizer,
                             pool=self.pool, metrics=daemon.metrics,
                             readiness=daemon.readiness)
        app = create_app(context, self.tokens)
        events.attach(app, daemon.publisher.recent)
        self.server = ApiServer(app, config.api)
        if not self.tokens.tokens():
            log.warning("no admin API tokens yet: only /healthz and /readyz answer; create one "
                        "with `edge-face token create --name NAME --scope admin`",
                        extra={"token_file": str(self.tokens.path)})

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def alive(self) -> bool:
        return self.server.alive

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self.pool.close()

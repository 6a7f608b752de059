"""``edge-face run``: the daemon (what the systemd unit starts)."""

from __future__ import annotations

import argparse
import signal
from types import FrameType

from edge.config import Config
from edge.log import setup_logging


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the recognition daemon (camera -> MQTT events)")
    p.set_defaults(func=_run)


def _stop_during_startup(signum: int, frame: FrameType | None) -> None:
    # Model loading can take minutes on a cold Jetson; a stop then is a clean exit, not a crash.
    raise SystemExit(0)


def _run(args: argparse.Namespace, config: Config) -> int:
    setup_logging(config.logging)
    signal.signal(signal.SIGTERM, _stop_during_startup)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nothing to reload until the daemon runs
    from edge.daemon.app import Daemon

    daemon = Daemon(config, args.config)
    daemon.install_signals()
    return daemon.run()

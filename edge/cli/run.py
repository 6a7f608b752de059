"""``edge-face run``: the daemon (what the systemd unit starts)."""

from __future__ import annotations

import argparse

from edge.config import Config
from edge.log import setup_logging


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the recognition daemon (camera -> MQTT events)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace, config: Config) -> int:
    setup_logging(config.logging)
    from edge.daemon.app import Daemon

    daemon = Daemon(config, args.config)
    daemon.install_signals()
    return daemon.run()

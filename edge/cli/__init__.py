"""The ``edge-face`` command: a thin shell over the service layer.

Each subcommand lives in its own module under ``edge.cli`` and exposes ``register(subparsers)``;
the module sets ``func(args, config) -> int`` on its parser. Expected failures are ``EdgeError``
and become one line on stderr plus the error's exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edge import __version__
from edge.config import load_config
from edge.errors import EdgeError

# Order here is the order in `edge-face --help`.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "edge.cli.models",
    "edge.cli.embed",
    "edge.cli.gallery",
    "edge.cli.recognize",
    "edge.cli.run",
    "edge.cli.mqtt",
    "edge.cli.token",
    "edge.cli.config_cmd",
    "edge.cli.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-face",
        description="Consent-first face recognition for doors and kiosks.",
    )
    parser.add_argument("--version", action="version", version=f"edge-face {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $EDGE_FACE_CONFIG or /etc/edge-face/config.toml if present)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        return int(args.func(args, config) or 0)
    except EdgeError as exc:
        print(f"edge-face: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

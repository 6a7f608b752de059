"""``edge-face config show|check``: what the device will actually run with."""

from __future__ import annotations

import argparse
import json

from edge.config import Config, config_as_dict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show or check the effective configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    show = csub.add_parser("show", help="print the effective configuration (secrets masked)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)
    check = csub.add_parser("check", help="validate the configuration and exit")
    check.set_defaults(func=_check)


def _show(args: argparse.Namespace, config: Config) -> int:
    data = config_as_dict(config)
    if args.json:
        print(json.dumps({"source": config.source, **data}, sort_keys=True))
        return 0
    print(f"# from {config.source}")
    for section, values in data.items():
        print(f"[{section}]")
        for key, val in values.items():
            print(f"{key} = {json.dumps(val)}")
        print()
    return 0


def _check(args: argparse.Namespace, config: Config) -> int:
    print(f"config ok ({config.source})")
    return 0

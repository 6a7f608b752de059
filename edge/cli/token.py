"""``edge-face token create|list|revoke|rotate``: who may use the admin API.

A thin shell over ``edge.api.tokens.TokenStore``. The secret is printed once, by ``create`` and
``rotate``; only its SHA-256 is kept. ``--stdin`` takes an operator-chosen secret (Ansible,
from a vault) and makes ``create`` idempotent: ``"changed": false`` when that name already holds
that secret and scope.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edge.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="create, list, rotate or revoke admin API tokens")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION")
    tsub.required = True
    create = tsub.add_parser("create", help="make a token (its secret is shown once)")
    create.add_argument("--name", required=True, help="who or what uses it (audited as actor)")
    create.add_argument("--scope", required=True, choices=("read", "admin"),
                        help="read: look only; admin: also change the gallery")
    create.add_argument("--stdin", action="store_true",
                        help="read the secret from stdin instead of generating one")
    create.set_defaults(func=_create)
    lst = tsub.add_parser("list", help="the tokens (names, scopes; never secrets)")
    lst.set_defaults(func=_list)
    revoke = tsub.add_parser("revoke", help="remove a token; it stops working at once")
    revoke.add_argument("token", metavar="NAME_OR_ID")
    revoke.set_defaults(func=_revoke)
    rotate = tsub.add_parser("rotate", help="new secret for a token; the old one stops at once")
    rotate.add_argument("token", metavar="NAME_OR_ID")
    rotate.set_defaults(func=_rotate)
    for parser in (create, lst, revoke, rotate):
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def _store(config: Config) -> Any:
    from edge.api.tokens import TokenStore

    return TokenStore.from_config(config)


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    print(json.dumps(data, sort_keys=True) if args.json else text)
    return 0


def _secret_text(data: dict[str, Any]) -> str:
    return (f"token {data['name']} ({data['scope']}): {data['token']}\n"
            "store it now: it is not shown again")


def _create(args: argparse.Namespace, config: Config) -> int:
    secret = sys.stdin.read() if args.stdin else None
    data = _store(config).create(args.name, args.scope, secret)
    if "token" in data:
        return _print(args, data, _secret_text(data))
    state = "stored" if data["changed"] else "unchanged"
    return _print(args, data, f"token {data['name']} ({data['scope']}) {state}")


def _list(args: argparse.Namespace, config: Config) -> int:
    data = _store(config).list()
    rows = [f"{'ID':<20} {'SCOPE':<6} {'CREATED':<28} NAME"]
    rows += [f"{t['id']:<20} {t['scope']:<6} {t['created_at']:<28} {t['name']}"
             for t in data["tokens"]]
    return _print(args, data, "\n".join(rows))


def _revoke(args: argparse.Namespace, config: Config) -> int:
    data = _store(config).revoke(args.token)
    return _print(args, data, f"revoked {data['name']} ({data['revoked']})")


def _rotate(args: argparse.Namespace, config: Config) -> int:
    data = _store(config).rotate(args.token)
    return _print(args, data, _secret_text(data))

"""``edge-face person|gallery|audit|key``: the gallery from the device's shell.

A thin shell over ``edge.service.GalleryService``: parse, call, print. With ``--json`` each
command prints exactly one JSON document on stdout (the shapes are in ``docs/gallery.md``;
scripts and the Ansible role depend on them); without it, short readable text.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config import Config

if TYPE_CHECKING:  # imported when a command runs: the store and its crypto cost ~20 ms
    from edge.service import GalleryService

Handler = Callable[[argparse.Namespace, Config], int]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"cli:uid{os.getuid()}"


def _emit(args: argparse.Namespace, data: dict[str, Any], text: Callable[[], str]) -> None:
    print(json.dumps(data, sort_keys=True) if args.json else text())


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _consent_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consent-by", required=True, metavar="WHO",
                        help="who gave the consent (the person, a guardian, ...)")
    parser.add_argument("--purpose", required=True, help="what the consent is for")
    parser.add_argument("--expires", metavar="ISO8601",
                        help="when the consent ends (no offset means UTC)")
    parser.add_argument("--evidence", metavar="REF",
                        help="where the signed form or record is kept")


def _service(config: Config) -> GalleryService:
    from edge.service import GalleryService

    return GalleryService.open(config)


def parse_iso(text: str, what: str) -> datetime:
    from edge.gallery.times import parse_iso as parse

    return parse(text, what)


def _cmd(fn: Callable[[argparse.Namespace, GalleryService], int]) -> Handler:
    """Open the service around a command and close it whatever happens."""
    def run(args: argparse.Namespace, config: Config) -> int:
        with _service(config) as service:
            return fn(args, service)
    return run


# ---------------------------------------------------------------------- person

def _person_add(args: argparse.Namespace, svc: GalleryService) -> int:
    expires = parse_iso(args.expires, "--expires") if args.expires else None
    data = svc.add_person(label=args.label, consent_by=args.consent_by, purpose=args.purpose,
                          expires_at=expires, evidence=args.evidence, actor=_actor())
    _emit(args, data, lambda: f"added person {data['id']}")
    return 0


def _person_consent(args: argparse.Namespace, svc: GalleryService) -> int:
    expires = parse_iso(args.expires, "--expires") if args.expires else None
    data = svc.grant_consent(args.person_id, consent_by=args.consent_by, purpose=args.purpose,
                             expires_at=expires, evidence=args.evidence, actor=_actor())
    _emit(args, data, lambda: f"recorded consent {data['consent_id']} for {args.person_id}")
    return 0


def _person_list(args: argparse.Namespace, svc: GalleryService) -> int:
    data = svc.list_persons()

    def text() -> str:
        rows = [f"{'ID':<28} {'CONSENT':<10} {'TEMPLATES':>9}  LABEL"]
        rows += [f"{p['id']:<28} {p['consent']:<10} {p['templates']:>9}  {p['label'] or '-'}"
                 for p in data["persons"]]
        return "\n".join(rows)

    _emit(args, data, text)
    return 0


def _person_show(args: argparse.Namespace, svc: GalleryService) -> int:
    data = svc.show_person(args.person_id)

    def text() -> str:
        lines = [f"person    {data['id']}", f"label     {data['label'] or '-'}",
                 f"created   {data['created_at']}", f"updated   {data['updated_at']}",
                 f"origin    {data['origin']}", f"consent   {data['consent']}"]
        for c in data["consents"]:
            lines.append(f"  consent {c['id']}: by {c['given_by']} for {c['purpose']}, granted "
                         f"{c['granted_at']}, expires {c['expires_at'] or 'never'}"
                         + (f", withdrawn {c['withdrawn_at']}" if c["withdrawn_at"] else ""))
        for t in data["templates"]:
            lines.append(f"  template {t['id']}: {t['model_id']} {t['model_version']}, "
                         f"score {t['quality'].get('score')}, {t['created_at']}")
        return "\n".join(lines)

    _emit(args, data, text)
    return 0


def _person_delete(args: argparse.Namespace, svc: GalleryService) -> int:
    data = svc.delete_person(args.person_id, actor=_actor())
    removed = data["removed"]
    _emit(args, data, lambda: (
        f"deleted person {data['person_id']} at {data['deleted_at']}: {removed['templates']} "
        f"template(s), {removed['consents']} consent record(s); audit entry "
        f"{data['audit_seq']} {data['audit_hash']}"))
    return 0


def _person_export(args: argparse.Namespace, svc: GalleryService) -> int:
    data = svc.export_person(args.person_id, actor=_actor())
    # The export is for the person concerned: readable means indented JSON, every field shown.
    _emit(args, data, lambda: json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
    return 0


def _person_withdraw(args: argparse.Namespace, svc: GalleryService) -> int:
    data = svc.withdraw_consent(args.person_id, actor=_actor())
    _emit(args, data, lambda: (
        f"withdrew {data['consents_withdrawn']} consent(s) of {data['person_id']}; removed "
        f"{data['templates_removed']} template(s)"))
    return 0


def _register_person(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("person", help="add, list, show, delete, export persons; consent")
    psub = p.add_subparsers(dest="person_command", metavar="ACTION")
    psub.required = True

    add = psub.add_parser("add", help="add a person with their consent")
    add.add_argument("--label", help="human-readable name (optional)")
    _consent_args(add)
    _json_flag(add)
    add.set_defaults(func=_cmd(_person_add))

    consent = psub.add_parser("consent", help="record a new consent for a person")
    consent.add_argument("person_id", metavar="ID")
    _consent_args(consent)
    _json_flag(consent)
    consent.set_defaults(func=_cmd(_person_consent))

    for name, helptext, handler in (
        ("show", "everything stored about a person (no embeddings)", _person_show),
        ("delete", "erase a person and print the receipt", _person_delete),
        ("export", "subject access: the person's record as JSON (audited)", _person_export),
        ("withdraw-consent", "withdraw consent and remove the templates", _person_withdraw),
    ):
        cmd = psub.add_parser(name, help=helptext)
        cmd.add_argument("person_id", metavar="ID")
        _json_flag(cmd)
        cmd.set_defaults(func=_cmd(handler))

    lst = psub.add_parser("list", help="list persons")
    _json_flag(lst)
    lst.set_defaults(func=_cmd(_person_list))


# ---------------------------------------------------------------------- gallery, audit, key

def _gallery_export(args: argparse.Namespace, svc: GalleryService) -> int:
    data = svc.export_bundle(args.path, actor=_actor(), signing_key_file=args.signing_key,
                             fleet_key_file=args.fleet_key)
    _emit(args, data, lambda: (
        f"wrote bundle {data['bundle_id']} ({data['persons']} persons, {data['templates']} "
        f"templates) to {data['path']}"))
    return 0


def _gallery_import(args: argparse.Namespace, svc: GalleryService) -> int:
    from edge.cli.progress import progress_bar

    with progress_bar("import", "person", enabled=not args.json) as bar:
        data = svc.import_bundle(args.path, actor=_actor(), force=args.force,
                                 trusted_keys_dir=args.trusted_keys,
                                 fleet_key_file=args.fleet_key, progress=bar)
    _emit(args, data, lambda: (
        f"bundle {data['bundle_id']}: {data['status']}; persons +{data['persons_added']} "
        f"~{data['persons_updated']} -{data['persons_removed']}, templates "
        f"+{data['templates_added']} -{data['templates_removed']}"))
    return 0


def _gallery_sweep(args: argparse.Namespace, svc: GalleryService) -> int:
    data = svc.sweep_consent()
    _emit(args, data, lambda: f"consent sweep: {len(data['swept'])} person(s) lost templates")
    return 0


def _gallery_keygen(args: argparse.Namespace, config: Config) -> int:
    from edge.service import GalleryService

    data = GalleryService.keygen(config, signing_key_file=args.signing_key,
                                 fleet_key_file=args.fleet_key)
    _emit(args, data, lambda: "\n".join([
        f"signing key  {data['signing_key']}", f"public key   {data['public_key']} "
        f"(copy to each device's trusted keys dir)", f"fleet key    {data['fleet_key']}",
        f"key id       {data['key_id']}", f"created      {', '.join(data['created']) or '-'}"]))
    return 0


def _audit_verify(args: argparse.Namespace, svc: GalleryService) -> int:
    data = svc.verify_audit()
    _emit(args, data, lambda: (
        f"audit log ok ({data['entries']} entries)" if data["ok"] else
        f"audit log BROKEN at entry {data['first_bad_seq']}: {data['reason']}"))
    return 0 if data["ok"] else 1


def _key_rotate(args: argparse.Namespace, svc: GalleryService) -> int:
    data = svc.rotate_key(actor=_actor())
    _emit(args, data, lambda: f"rotated {data['key_file']}: {data['templates']} "
                              "template(s) re-encrypted")
    return 0


def _register_gallery(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("gallery", help="fleet bundles and consent sweep")
    gsub = g.add_subparsers(dest="gallery_command", metavar="ACTION")
    gsub.required = True

    exp = gsub.add_parser("export", help="write a signed, encrypted fleet bundle")
    exp.add_argument("path", type=Path)
    exp.add_argument("--signing-key", type=Path, help="default: [storage] signing_key_file")
    exp.add_argument("--fleet-key", type=Path, help="default: [storage] fleet_key_file")
    _json_flag(exp)
    exp.set_defaults(func=_cmd(_gallery_export))

    imp = gsub.add_parser("import", help="verify and apply a fleet bundle (all or nothing)")
    imp.add_argument("path", type=Path)
    imp.add_argument("--force", action="store_true",
                     help="accept a bundle older than the last one or dated in the future")
    imp.add_argument("--trusted-keys", type=Path, help="default: [storage] trusted_keys_dir")
    imp.add_argument("--fleet-key", type=Path, help="default: [storage] fleet_key_file")
    _json_flag(imp)
    imp.set_defaults(func=_cmd(_gallery_import))

    keygen = gsub.add_parser("keygen", help="create the operator key pair and the fleet key")
    keygen.add_argument("--signing-key", type=Path, help="default: [storage] signing_key_file")
    keygen.add_argument("--fleet-key", type=Path, help="default: [storage] fleet_key_file")
    _json_flag(keygen)
    keygen.set_defaults(func=_gallery_keygen)

    sweep = gsub.add_parser("sweep", help="remove templates whose consent lapsed (now)")
    _json_flag(sweep)
    sweep.set_defaults(func=_cmd(_gallery_sweep))

    a = sub.add_parser("audit", help="the gallery's audit log")
    asub = a.add_subparsers(dest="audit_command", metavar="ACTION")
    asub.required = True
    verify = asub.add_parser("verify", help="check the hash chain; exit 1 if broken")
    _json_flag(verify)
    verify.set_defaults(func=_cmd(_audit_verify))

    k = sub.add_parser("key", help="the template encryption key")
    ksub = k.add_subparsers(dest="key_command", metavar="ACTION")
    ksub.required = True
    rotate = ksub.add_parser("rotate", help="re-encrypt every template with a new key")
    _json_flag(rotate)
    rotate.set_defaults(func=_cmd(_key_rotate))


def register(sub: argparse._SubParsersAction) -> None:
    _register_person(sub)
    _register_gallery(sub)

"""``edge-face enroll`` and ``edge-face identify``: the recognition service from a shell.

Shapes (a contract, see docs/cli.md):
enroll   -> {"person_id", "templates_added", "rejected": [{"path", "reason"}]}
identify -> one line per image: {"path", "faces": [{"box", "person_id", "label"?, "similarity",
            "decision"}]}, largest face first.
"""

from __future__ import annotations

import argparse
import json
import sys

from edge.cli.lines import report_refused
from edge.cli.progress import progress_bar
from edge.config import Config
from edge.errors import ImageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enroll", help="add face templates of a consented person from photos")
    p.add_argument("person_id", metavar="PERSON_ID")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--force", action="store_true",
                   help="enroll even if the face already matches another person (warns)")
    p.set_defaults(func=_enroll)
    i = sub.add_parser("identify", help="who is in these photos (enrolled people only)")
    i.add_argument("images", nargs="+", metavar="IMAGE")
    i.add_argument("--json", action="store_true", help="one JSON object per image per line")
    i.set_defaults(func=_identify)


def _enroll(args: argparse.Namespace, config: Config) -> int:
    from edge.recognition import open_recognizer

    rec = open_recognizer(config)
    with progress_bar("enroll", "photo", enabled=not args.json and len(args.images) > 1) as bar:
        out = rec.enroll(args.person_id, args.images, force=args.force, actor="cli",
                         progress=bar)
    for warning in out.pop("warnings", []):
        print(f"edge-face: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['templates_added']} template(s) added to {out['person_id']}")
        for r in out["rejected"]:
            print(f"  rejected {r['path']}: {r['reason']}")
    return 0 if out["templates_added"] else 1


def _identify(args: argparse.Namespace, config: Config) -> int:
    from edge.recognition import open_recognizer

    rec = open_recognizer(config)
    failed = 0
    for path in args.images:
        try:
            out = rec.identify(path)
        except ImageError as exc:
            failed += 1
            report_refused(path, exc, args.json)
            continue
        if args.json:
            print(json.dumps(out), flush=True)
            continue
        print(f"{path}: {len(out['faces'])} face(s)")
        for face in out["faces"]:
            who = face["person_id"] or "unknown"
            if face.get("label"):
                who += f" ({face['label']})"
            sim = "-" if face["similarity"] is None else f"{face['similarity']:.3f}"
            print(f"  {who} similarity={sim} decision={face['decision']}")
    return 1 if failed else 0

"""``edge-face embed`` and ``edge-face verify``: the engine on photos, for scripts and people.

The JSON shapes are a contract other tools parse; see docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from edge.config import Config
from edge.engine import FaceEngine, similarity
from edge.errors import EdgeError, ImageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="detect and embed the faces of images")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object per input per line")
    p.add_argument("--no-rescue", action="store_true", help="skip second detection passes")
    p.set_defaults(func=_embed)
    v = sub.add_parser("verify", help="are the largest faces of two images the same person?")
    v.add_argument("a", metavar="A")
    v.add_argument("b", metavar="B")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.add_argument("--threshold", type=float, help="override [matching] threshold")
    v.set_defaults(func=_verify)


def _embed(args: argparse.Namespace, config: Config) -> int:
    engine = FaceEngine(config)
    failed = 0
    for path in args.paths:
        try:
            result = engine.analyze_file(path, rescue=False if args.no_rescue else None)
        except ImageError as exc:
            failed += 1
            if args.json:
                print(json.dumps({"path": path, "error": str(exc)}), flush=True)
            else:
                print(f"{path}: error: {exc}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"path": path, "faces": [f.to_json() for f in result.faces]}),
                  flush=True)
        else:
            print(f"{path}: {len(result.faces)} face(s)")
            for i, face in enumerate(result.faces):
                x, y, w, h = (round(float(v)) for v in face.box)
                q = face.quality
                print(f"  #{i} box=({x},{y},{w},{h}) score={face.score:.3f} "
                      f"quality={q['score']:.2f} sharpness={q['sharpness']:.0f} "
                      f"frontalness={q['frontalness']:.2f}")
    return 1 if failed else 0


def _largest_embedding(engine: FaceEngine, path: str):
    faces = engine.analyze_file(path).faces
    if not faces:
        raise EdgeError(f"{path}: no face found")
    return faces[0].embedding


def _verify(args: argparse.Namespace, config: Config) -> int:
    engine = FaceEngine(config)
    threshold = config.matching.threshold if args.threshold is None else args.threshold
    sim = similarity(_largest_embedding(engine, args.a), _largest_embedding(engine, args.b))
    match = sim >= threshold
    if args.json:
        print(json.dumps({"similarity": round(sim, 6), "match": match, "threshold": threshold}))
    else:
        verdict = "same person" if match else "different people"
        print(f"{verdict} (similarity {sim:.3f}, threshold {threshold:g})")
    return 0

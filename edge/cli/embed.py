"""``edge-face embed`` and ``edge-face verify``: the engine on photos, for scripts and people.

The JSON shapes are a contract other tools parse; see docs/cli.md.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from edge.cli.lines import report_refused
from edge.config import Config
from edge.engine import FaceEngine, ImageResult, default_jobs, similarity
from edge.errors import EdgeError, ImageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="detect and embed the faces of images")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object per input per line")
    p.add_argument("--no-rescue", action="store_true", help="skip second detection passes")
    p.add_argument("--jobs", type=_jobs, default=0, metavar="N",
                   help="images analysed at once (default 0: one per CPU core)")
    p.set_defaults(func=_embed)
    v = sub.add_parser("verify", help="are the largest faces of two images the same person?")
    v.add_argument("a", metavar="A")
    v.add_argument("b", metavar="B")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.add_argument("--threshold", type=float, help="override [matching] threshold")
    v.set_defaults(func=_verify)


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (one per core) or more")
    return value


def _embed(args: argparse.Namespace, config: Config) -> int:
    jobs = args.jobs or default_jobs(len(args.paths))
    failed = 0
    results = FaceEngine.open_and_analyze(config, args.paths, jobs,
                                          rescue=False if args.no_rescue else None)
    for path, result in zip(args.paths, results, strict=True):
        if isinstance(result, ImageError):
            failed += 1
            report_refused(path, result, args.json)
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


def _largest(path: str, result: ImageResult | ImageError) -> np.ndarray:
    if isinstance(result, ImageError):
        raise result
    if not result.faces:
        raise EdgeError(f"{path}: no face found")
    return result.faces[0].embedding


def _verify(args: argparse.Namespace, config: Config) -> int:
    threshold = config.matching.threshold if args.threshold is None else args.threshold
    a, b = FaceEngine.open_and_analyze(config, [args.a, args.b], default_jobs(2))
    sim = similarity(_largest(args.a, a), _largest(args.b, b))
    match = sim >= threshold
    if args.json:
        print(json.dumps({"similarity": round(sim, 6), "match": match, "threshold": threshold}))
    else:
        verdict = "same person" if match else "different people"
        print(f"{verdict} (similarity {sim:.3f}, threshold {threshold:g})")
    return 0

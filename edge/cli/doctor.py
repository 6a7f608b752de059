"""``edge-face doctor [--json]``: one command that says whether this device can do its job.

Exit 0 when every check passes (warnings and skipped checks included); 1 otherwise, with the
failing checks named on stderr. GPU backends that do not load are reported with their reason
and only fail the run when the config asks for one of them (see edge/doctor.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check this device: system, backends, camera, broker, "
                                      "permissions, disk")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--image", type=Path, metavar="PHOTO",
                   help="photo with a face for the latency and agreement runs "
                        "(default: the test portrait in a source checkout, else a pattern)")
    p.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace, config: Config) -> int:
    from edge.doctor import run_doctor

    report = run_doctor(config, args.image)
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        _print_text(report.as_dict())
    if report.failed:
        names = ", ".join(f"{c.name} ({c.detail})" for c in report.failed)
        print(f"edge-face: doctor: failing checks: {names}", file=sys.stderr)
        return 1
    return 0


def _print_text(data: dict) -> None:
    system = data["system"]
    for key in ("os", "kernel", "machine", "board", "l4t", "jetpack", "python", "tensorrt",
                "cuda_runtime", "cuda_driver", "cuda_python", "gpu", "onnxruntime"):
        print(f"{key:<14} {system.get(key) or '-'}")
    print(f"{'providers':<14} {', '.join(system['onnxruntime_providers']) or '-'}")
    print(f"{'jetson_utils':<14} {'yes' if system['jetson_utils'] else 'no'}")
    for note in system["notes"]:
        print(f"{'note':<14} {note}")
    print()
    for row in data["backends"]:
        if not row["available"]:
            print(f"{row['name']:<16} unavailable: {row['reason']}")
            continue
        lat, agr = row["latency_ms"], row["agreement"]
        print(f"{row['name']:<16} detector {lat['detector']:.2f} ms, embedder "
              f"{lat['embedder']:.2f} ms, cosine {agr['cosine_min']:.4f} "
              f"{'agrees' if agr['ok'] else 'DISAGREES'} with the CPU fp32 reference")
    print()
    for check in data["checks"]:
        print(f"{check['status']:<5} {check['name']:<13} {check['detail']}")

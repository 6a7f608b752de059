"""``edge-face doctor``: what a field engineer needs to know about one device, in one run.

Why one command: on a door at a customer's site the questions are always the same (is this the
JetPack we support, does the GPU path load and agree with the CPU, does the camera give a
frame, can we reach the broker, are the key and the caches safe, is the disk full) and each one
otherwise takes its own tool. Every answer is a line in ``checks`` or a row in ``backends``;
an unavailable GPU backend is a row with its reason, not a failure, unless it is the backend the
config asks for.

Read-only apart from the engine cache: it never connects to the broker as the device (that
would take over the daemon's MQTT session and fire its Last Will), only opens a TCP (and, with
``tls = true``, a TLS) connection. Probing the TensorRT backend builds its engines when none
are cached, which takes minutes once, exactly as the daemon's first start would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import os
import platform
import re
import shutil
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import Config
from edge.errors import EdgeError
from edge.tracking.iou import iou_matrix

#: Embeddings must agree with the CPU fp32 reference at least this well (cosine).
MIN_COSINE = 0.99
#: Detections must overlap the reference's at least this well (IoU).
MIN_IOU = 0.9
LATENCY_RUNS = 5
CAMERA_TIMEOUT_S = 10.0
BROKER_TIMEOUT_S = 3.0
DISK_FAIL_BYTES = 200 * 1024 ** 2
DISK_WARN_BYTES = 1024 ** 3
#: L4T release -> JetPack, for the releases whose TensorRT this project supports or names.
JETPACK = {
    "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4",
    "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
}
#: A portrait shipped with the source tree's tests; the doctor's default input when present.
SAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "faces" / "obama.jpg"


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn", "fail" or "skip"
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "fail"


@dataclass
class BackendRow:
    name: str
    available: bool
    reason: str | None = None
    latency_ms: dict[str, float] | None = None
    agreement: dict[str, Any] | None = None


@dataclass
class Report:
    system: dict[str, Any]
    backends: list[BackendRow] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system,
                "backends": [dataclasses.asdict(b) for b in self.backends],
                "checks": [dataclasses.asdict(c) for c in self.checks]}

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.failed]


# -- the system ----------------------------------------------------------------------------------

def parse_tegra_release(text: str) -> str | None:
    """``# R36 (release), REVISION: 4.3, GCID: ...`` -> ``"36.4.3"``."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not match:
        return None
    parts = [match.group(1), *match.group(2).split(".")]
    while len(parts) < 3:
        parts.append("0")
    return ".".join(parts[:3])


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.system()


def _dist_version(*names: str) -> str | None:
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(name)
    return None


def system_info(tegra_release: Path = Path("/etc/nv_tegra_release")) -> dict[str, Any]:
    info: dict[str, Any] = {
        "os": _os_name(), "kernel": platform.release(), "machine": platform.machine(),
        "python": platform.python_version(), "l4t": None, "jetpack": None,
        "board": None, "tensorrt": None, "cuda_runtime": None, "cuda_driver": None,
        "cuda_python": _dist_version("cuda-python", "cuda-bindings"), "gpu": None,
        "onnxruntime": None, "onnxruntime_providers": [], "jetson_utils": False, "notes": [],
    }
    with contextlib.suppress(OSError):
        info["l4t"] = parse_tegra_release(tegra_release.read_text(encoding="utf-8",
                                                                  errors="replace"))
        info["jetpack"] = JETPACK.get(info["l4t"] or "")
    with contextlib.suppress(OSError):
        info["board"] = Path("/proc/device-tree/model").read_text(
            errors="replace").strip("\0\n ") or None
    try:
        import tensorrt

        version = getattr(tensorrt, "__version__", None)
        info["tensorrt"] = version if hasattr(tensorrt, "Builder") else None
        if info["tensorrt"] is None:
            info["notes"].append("'tensorrt' imports but is not TensorRT (type stubs only?)")
    except Exception as exc:
        info["notes"].append(f"tensorrt: {type(exc).__name__}: {exc}")
    try:
        from edge.inference.cuda_rt import CudaRuntime

        cuda = CudaRuntime()
        info["cuda_runtime"] = cuda.runtime_version()
        info["cuda_driver"] = cuda.driver_version()
        device = cuda.device()
        info["gpu"] = f"{device.name} (compute {device.compute_capability})"
    except EdgeError as exc:
        info["notes"].append(str(exc))
    except Exception as exc:  # a broken CUDA install must not stop the report
        info["notes"].append(f"cuda: {type(exc).__name__}: {exc}")
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    except Exception as exc:
        info["notes"].append(f"onnxruntime: {exc}")
    from edge.camera.jetson import import_jetson_utils

    info["jetson_utils"] = import_jetson_utils() is not None
    return info


# -- the backends --------------------------------------------------------------------------------

@dataclass
class _Sample:
    image: np.ndarray
    source: str
    boxes: list[np.ndarray]  # the reference's detections (may be empty on a synthetic input)
    crops: list[np.ndarray]  # aligned 112x112 crops every embedder gets
    reference: np.ndarray  # the reference's embeddings of ``crops``


def _median_ms(run: Any) -> float:
    run()  # warm-up: the first run of a GPU engine pays lazy initialisation
    times = []
    for _ in range(LATENCY_RUNS):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000.0)
    return round(float(np.median(times)), 2)


def _sample(config: Config, image_path: Path | None) -> _Sample:
    """The input every backend sees and the CPU fp32 reference's answers on it."""
    from edge.detection.yunet import YuNet
    from edge.embedding.align import align
    from edge.embedding.sface import SFace
    from edge.imageio import load_image
    from edge.inference.ort import OrtSession
    from edge.models import resolve_prepared

    path = image_path if image_path is not None else (
        SAMPLE_IMAGE if SAMPLE_IMAGE.is_file() else None)
    if path is not None:
        image = load_image(path, max_pixels=config.images.max_pixels,
                           max_bytes=config.images.max_bytes).pixels
        source = str(path)
    else:  # an installed package has no test photos: a fixed pattern still times and compares
        rng = np.random.default_rng(7)
        image = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
        source = "synthetic"

    def plain(role: str) -> OrtSession:
        model = resolve_prepared(config.models.dir, role)[1]
        return OrtSession(model, threads=0, providers=["CPUExecutionProvider"],
                          backend="reference")

    detector = YuNet(plain("detector"), config.detection)
    faces = detector.nms(detector.raw(image), (image.shape[1], image.shape[0]))
    crops = [align(image, f.landmarks) for f in faces[:4]]
    if not crops:
        crops = [np.ascontiguousarray(image[:112, :112])]
    reference = SFace(plain("embedder")).embed(crops)
    return _Sample(image, source, [f.box for f in faces], crops, reference)


def probe_backend(name: str, config: Config, sample: _Sample) -> BackendRow:
    from edge.detection.yunet import YuNet
    from edge.embedding.sface import SFace
    from edge.inference.backend import load_backend
    from edge.inference.engine_cache import role_profile
    from edge.models import load_manifest, resolve_prepared

    manifest = load_manifest()
    inference = dataclasses.replace(config.inference, backend=name)  # type: ignore[arg-type]
    try:
        det_spec, det_path = resolve_prepared(config.models.dir, "detector", manifest)
        emb_spec, emb_path = resolve_prepared(config.models.dir, "embedder", manifest)
        size = config.detection.input_size
        det = load_backend(name, det_path, inference, auto_threads=1,
                           profile=role_profile("detector", det_spec.input_name, size))
        emb = load_backend(name, emb_path, inference,
                           profile=role_profile("embedder", emb_spec.input_name, size))
    except EdgeError as exc:
        return BackendRow(name, False, str(exc))
    detector, embedder = YuNet(det, config.detection), SFace(emb)
    try:
        size = (sample.image.shape[1], sample.image.shape[0])
        faces = detector.nms(detector.raw(sample.image), size)
        embeddings = embedder.embed(sample.crops)
        latency = {"detector": _median_ms(lambda: detector.raw(sample.image)),
                   "embedder": _median_ms(lambda: embedder.embed(sample.crops[:1]))}
    except EdgeError as exc:
        return BackendRow(name, False, f"loads but fails to run: {exc}")
    cosine = float(np.min(np.sum(embeddings * sample.reference, axis=1)))
    overlap = iou_matrix(np.asarray(sample.boxes), np.asarray([f.box for f in faces]))
    ious = [float(row.max()) if row.size else 0.0 for row in overlap]
    agreement: dict[str, Any] = {
        "input": sample.source, "faces": len(faces), "reference_faces": len(sample.boxes),
        "cosine_min": round(cosine, 5), "iou_min": round(min(ious), 4) if ious else None}
    agreement["ok"] = bool(cosine >= MIN_COSINE and len(faces) == len(sample.boxes)
                           and all(i >= MIN_IOU for i in ious))
    return BackendRow(name, True, None, latency, agreement)


# -- the device ----------------------------------------------------------------------------------

def _mode_problem(path: Path, private: bool) -> str | None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if private and mode & 0o077:
        return f"mode {mode:04o}; must be readable by its owner only (chmod 600 {path})"
    if mode & 0o002:
        return f"mode {mode:04o} is world-writable (chmod o-w {path})"
    return None


def check_dir(name: str, path: Path, missing: str) -> Check:
    if not path.exists():
        return Check(name, "warn", f"{path} does not exist yet ({missing})")
    if not path.is_dir():
        return Check(name, "fail", f"{path} is not a directory")
    problem = _mode_problem(path, private=False)
    if problem:
        return Check(name, "fail", f"{path}: {problem}")
    if not os.access(path, os.W_OK | os.X_OK):
        return Check(name, "fail", f"{path} is not writable by this user (uid {os.getuid()})")
    return Check(name, "ok", str(path))


def check_key_file(path: Path) -> Check:
    if not path.exists():
        return Check("key_file", "warn", f"{path} does not exist yet (created at the first "
                                         "enrollment)")
    problem = _mode_problem(path, private=True)
    if problem:
        return Check("key_file", "fail", f"{path}: {problem}")
    return Check("key_file", "ok", f"{path} (owner only)")


def check_disk(path: Path) -> Check:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    text = f"{free / 1024 ** 3:.1f} GiB free on {probe}"
    if free < DISK_FAIL_BYTES:
        return Check("disk", "fail", text)
    return Check("disk", "warn" if free < DISK_WARN_BYTES else "ok", text)


def check_broker(config: Config) -> Check:
    mqtt = config.mqtt
    where = f"{mqtt.host}:{mqtt.port}"
    try:
        with socket.create_connection((mqtt.host, mqtt.port), BROKER_TIMEOUT_S) as sock:
            if not mqtt.tls:
                return Check("broker", "ok", f"{where} accepts TCP connections")
            from edge.events.publisher import _tls_context

            with _tls_context(mqtt).wrap_socket(sock, server_hostname=mqtt.host):
                return Check("broker", "ok", f"{where} completes a verified TLS handshake")
    except EdgeError as exc:
        return Check("broker", "fail", str(exc))
    except OSError as exc:
        return Check("broker", "fail", f"{where} unreachable: {exc}")


def check_camera(config: Config) -> Check:
    from edge.camera import LatestFrameReader, NullSource, make_source

    try:
        source = make_source(config.camera)
    except EdgeError as exc:
        return Check("camera", "fail", str(exc))
    if isinstance(source, NullSource):
        return Check("camera", "skip", "no camera configured ([camera] source = none)")
    reader = LatestFrameReader(source, backoff_initial_s=0.5, backoff_max_s=2.0)
    try:
        reader.start()
        frame = reader.get(timeout=CAMERA_TIMEOUT_S)
    except EdgeError as exc:
        return Check("camera", "fail", str(exc))
    finally:
        reader.close()
    if frame is None:
        return Check("camera", "fail", f"no frame within {CAMERA_TIMEOUT_S:g} s "
                                       f"(state {reader.stats.state})")
    h, w = frame.pixels.shape[:2]
    return Check("camera", "ok", f"{source.kind}: one {w}x{h} frame")


def check_api_tokens(config: Config) -> Check:
    """The token file as the daemon will read it: damaged or unsafe means nobody gets in."""
    from edge.api.tokens import TokenError, TokenStore, token_file

    if not config.api.enabled:
        return Check("api_tokens", "skip", "[api] enabled = false")
    path = token_file(config)
    try:
        tokens = TokenStore(path).list()["tokens"]
    except TokenError as exc:
        return Check("api_tokens", "fail", str(exc))
    if not tokens:
        return Check("api_tokens", "warn", f"no tokens in {path}: only /healthz and /readyz "
                     "answer (edge-face token create --name NAME --scope admin)")
    admins = sum(1 for t in tokens if t["scope"] == "admin")
    return Check("api_tokens", "ok", f"{len(tokens)} token(s), {admins} admin, in {path}")


def check_api(config: Config) -> Check:
    """Where the API will listen: its TLS files load, and the port is free or is ours."""
    import ssl
    import urllib.error
    import urllib.request

    api = config.api
    if not api.enabled:
        return Check("api", "skip", "[api] enabled = false")
    context = None
    if api.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(api.tls_cert, api.tls_key)
        except (OSError, ssl.SSLError) as exc:
            return Check("api", "fail", f"[api] tls_cert / tls_key cannot be loaded: {exc}")
    host = "127.0.0.1" if api.host in ("0.0.0.0", "") else ("::1" if api.host == "::"
                                                              else api.host)
    where = f"{api.host}:{api.port}"
    try:
        with socket.create_connection((host, api.port), timeout=BROKER_TIMEOUT_S):
            pass
    except OSError:
        return Check("api", "ok", f"{where} is free (the daemon is not running)"
                     + (", TLS files load" if context else ""))
    scheme = "https" if context else "http"
    url = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{api.port}/healthz"
    client_tls = None
    if context is not None:  # liveness only: whose certificate it is was checked above
        client_tls = ssl.create_default_context()
        client_tls.check_hostname = False
        client_tls.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=BROKER_TIMEOUT_S,
                                    context=client_tls) as answer:
            body = answer.read(200)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        return Check("api", "fail", f"{where} is taken by something that is not edge-face's "
                     f"API ({exc})")
    if b'"status":"ok"' not in body.replace(b" ", b""):
        return Check("api", "fail", f"{where} is taken by another program")
    return Check("api", "ok", f"the daemon's API answers on {scheme}://{where}")


def run_doctor(config: Config, image: Path | None = None) -> Report:
    from edge.inference.backend import AUTO_ORDER, engine_dir
    from edge.models import load_manifest, resolve_prepared

    report = Report(system_info())
    try:
        manifest = load_manifest()
        for role in ("detector", "embedder"):
            resolve_prepared(config.models.dir, role, manifest)
    except EdgeError as exc:
        report.checks.append(Check("models", "fail", str(exc)))
        report.backends = [BackendRow(n, False, "models not ready") for n in AUTO_ORDER]
    else:
        report.checks.append(Check("models", "ok", f"prepared and verified in "
                                                   f"{config.models.dir}"))
        sample = _sample(config, image)
        report.backends = [probe_backend(name, config, sample) for name in AUTO_ORDER]
    report.checks.append(_backend_check(config, report.backends))
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("camera", lambda: check_camera(config)),
        ("broker", lambda: check_broker(config)),
        ("api", lambda: check_api(config)),
        ("api_tokens", lambda: check_api_tokens(config)),
        ("data_dir", lambda: check_dir("data_dir", config.storage.data_dir,
                                       "the daemon creates it")),
        ("key_file", lambda: check_key_file(config.storage.key_file)),
        ("engine_cache", lambda: check_dir("engine_cache", engine_dir(
            config.inference, config.models.dir), "created at the first GPU engine build")),
        ("disk", lambda: check_disk(config.storage.data_dir)),
    ]
    for name, check in checks:
        try:
            report.checks.append(check())
        except OSError as exc:  # e.g. run by an admin who may not look into the service's dirs
            report.checks.append(Check(name, "fail", f"{exc.strerror or exc}: "
                                                     f"{exc.filename or ''}".rstrip(": ")))
    return report


def _backend_check(config: Config, rows: list[BackendRow]) -> Check:
    wanted = config.inference.backend
    if wanted == "auto":
        chosen = next((r for r in rows if r.available), None)
        if chosen is None:
            return Check("backend", "fail", "auto: no backend loads")
    else:
        chosen = next(r for r in rows if r.name == wanted)
        if not chosen.available:
            return Check("backend", "fail", f"{wanted}: {chosen.reason}")
    if chosen.agreement is not None and not chosen.agreement["ok"]:
        return Check("backend", "fail", f"{chosen.name} disagrees with the CPU fp32 reference: "
                                        f"{chosen.agreement}")
    return Check("backend", "ok", f"{wanted}: {chosen.name} loads and agrees with the CPU "
                                  "fp32 reference")

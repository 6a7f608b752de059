"""One typed, validated configuration for every part of edge-face.

Why one place: the daemon, the CLI, the admin API and the Ansible role all read the same TOML
file, and a device that starts with a misspelt key silently running on defaults is worse than a
device that refuses to start. So every section is a frozen dataclass, unknown sections or keys
and values of the wrong type stop the program with a message naming the exact key, and every
key can be overridden by ``EDGE_FACE_<SECTION>__<KEY>`` (systemd ``Environment=``, tests).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from edge.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/edge-face/config.toml")
ENV_CONFIG_PATH = "EDGE_FACE_CONFIG"
ENV_PREFIX = "EDGE_FACE_"


def _xdg(var: str, fallback: str) -> Path:
    base = os.environ.get(var)
    return Path(base) if base else Path.home() / fallback


def _default_models_dir() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "edge-face" / "models"


def _default_data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "edge-face"


def _default_key_file() -> Path:
    # Outside the data dir on purpose: a copied data dir alone must reveal no template.
    return _xdg("XDG_CONFIG_HOME", ".config") / "edge-face" / "template.key"


@dataclass(frozen=True)
class DeviceConfig:
    id: str = "edge-face-dev"


@dataclass(frozen=True)
class ModelsConfig:
    dir: Path = field(default_factory=_default_models_dir)


@dataclass(frozen=True)
class InferenceConfig:
    backend: Literal["auto", "onnxruntime-cpu", "onnxruntime-gpu", "tensorrt"] = "auto"
    # 0 lets onnxruntime choose (one per physical core).
    threads: int = 0
    # Keep graphs optimised for this runtime and CPU in <models dir>/compiled (faster start).
    cache: bool = True
    # GPU backends (tensorrt, onnxruntime-gpu): engine precision, the builder's workspace limit,
    # and where built engines live ("" = <models dir>/engines).
    precision: Literal["fp16", "fp32"] = "fp16"
    workspace_mb: int = 1024
    engine_dir: str = ""


@dataclass(frozen=True)
class DetectionConfig:
    score_threshold: float = 0.6
    nms_threshold: float = 0.3
    # Longest side of the network input; the other side follows the aspect ratio, rounded to 32.
    input_size: int = 640
    # Second passes (contrast-normalised, tiled or upscaled, rotated) when the first finds none.
    rescue: bool = True
    max_faces: int = 32


@dataclass(frozen=True)
class ImagesConfig:
    # Checked from the header before any decoding, so a decompression bomb costs nothing.
    max_pixels: int = 50_000_000
    max_bytes: int = 50_000_000


@dataclass(frozen=True)
class QualityConfig:
    min_face_px: int = 40
    min_sharpness: float = 40.0
    min_brightness: float = 40.0
    max_brightness: float = 220.0
    min_contrast: float = 15.0
    min_frontalness: float = 0.5


@dataclass(frozen=True)
class StorageConfig:
    data_dir: Path = field(default_factory=_default_data_dir)
    key_file: Path = field(default_factory=_default_key_file)
    # Fleet bundles: the AES key shared by the fleet, the operator's Ed25519 signing key (on the
    # operator's machine only) and the directory of trusted operator public keys (*.pub).
    fleet_key_file: Path = field(
        default_factory=lambda: _xdg("XDG_CONFIG_HOME", ".config") / "edge-face" / "fleet.key")
    signing_key_file: Path = field(
        default_factory=lambda: _xdg("XDG_CONFIG_HOME", ".config") / "edge-face" / "operator.key")
    trusted_keys_dir: Path = field(
        default_factory=lambda: _xdg("XDG_CONFIG_HOME", ".config") / "edge-face" / "trusted")


@dataclass(frozen=True)
class MatchingConfig:
    threshold: float = 0.363
    margin: float = 0.05


@dataclass(frozen=True)
class EnrollmentConfig:
    max_templates: int = 5
    # A new face scoring this high against another person is refused (one human, one id); the
    # matching threshold by default, so no enrolled face can ever be identified as two people.
    duplicate_threshold: float = 0.363


@dataclass(frozen=True)
class CameraConfig:
    id: str = "cam0"
    source: str = "none"
    realtime: bool = True
    loop: bool = False
    width: int = 0
    height: int = 0
    fps: float = 0.0
    # Extra jetson_utils.videoSource settings as "key=value" words: codec, flip, latency, buffers.
    jetson_options: str = ""


@dataclass(frozen=True)
class TrackingConfig:
    iou_threshold: float = 0.3
    max_missed_frames: int = 15
    votes_needed: int = 2
    max_attempts: int = 4
    recheck_s: float = 0.25
    # One match this far above [matching] threshold decides at once, without waiting for votes.
    instant_margin: float = 0.15
    # A face is embedded again when its quality beats the track's best by this much (0..1 scale).
    quality_margin: float = 0.05


@dataclass(frozen=True)
class MqttConfig:
    host: str = "localhost"
    port: int = 1883
    protocol: Literal["3.1.1", "5"] = "5"
    username: str = ""
    password: str = ""
    password_file: str = ""
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    qos: int = 1
    keepalive: int = 30
    topic_prefix: str = "edge-face"
    # Home Assistant MQTT discovery: retained entity configs under <discovery_prefix>/ on connect.
    discovery: bool = False
    discovery_prefix: str = "homeassistant"


@dataclass(frozen=True)
class EventsConfig:
    include_label: bool = False
    cooldown_s: float = 30.0
    outbox_max_events: int = 10_000
    outbox_max_age_s: float = 7 * 24 * 3600.0


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = False
    # Loopback by default: the admin API manages who the door recognises. Any other address needs
    # TLS (tls_cert + tls_key) unless allow_insecure is set on purpose (see _cross_checks).
    host: str = "127.0.0.1"
    port: int = 8471
    # "" = <storage.data_dir>/api-tokens.json; holds only SHA-256 hashes of the tokens (0600).
    token_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    allow_insecure: bool = False
    # A whole request body (all images of one upload together); larger ones get 413 unread.
    max_upload_bytes: int = 10 * 1024 * 1024
    # A signed gallery bundle posted to /v1/gallery/import (streamed to disk, encrypted as is).
    max_bundle_bytes: int = 512 * 1024 * 1024
    max_files: int = 10
    # Identify/enroll jobs at once, and waiting; beyond both, 429 with Retry-After. workers 0 =
    # one less than the CPUs (at least 1), so the camera pipeline always has a core of its own.
    workers: int = 0
    queue: int = 4
    # Failed authentications a client may make per minute before it gets 429 for a while.
    auth_failures_per_minute: int = 10


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text", "journal"] = "auto"


@dataclass(frozen=True)
class Config:
    device: DeviceConfig = field(default_factory=DeviceConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    enrollment: EnrollmentConfig = field(default_factory=EnrollmentConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # Where the values came from, for error messages and `edge-face config show`.
    source: str = "defaults"


# Range checks that a type alone cannot express: (section, key) -> (predicate, description).
_CHECKS: dict[tuple[str, str], tuple[typing.Callable[[Any], bool], str]] = {
    ("inference", "threads"): (lambda v: 0 <= v <= 256, "between 0 and 256"),
    ("inference", "workspace_mb"): (lambda v: 16 <= v <= 65536, "between 16 and 65536 MiB"),
    ("detection", "score_threshold"): (lambda v: 0.0 < v < 1.0, "between 0 and 1"),
    ("detection", "nms_threshold"): (lambda v: 0.0 < v < 1.0, "between 0 and 1"),
    ("detection", "input_size"): (lambda v: 64 <= v <= 4096 and v % 32 == 0,
                                  "a multiple of 32 between 64 and 4096"),
    ("detection", "max_faces"): (lambda v: v >= 1, "at least 1"),
    ("images", "max_pixels"): (lambda v: v >= 1, "at least 1"),
    ("images", "max_bytes"): (lambda v: v >= 1, "at least 1"),
    ("matching", "threshold"): (lambda v: -1.0 <= v <= 1.0, "between -1 and 1"),
    ("matching", "margin"): (lambda v: 0.0 <= v <= 1.0, "between 0 and 1"),
    ("enrollment", "max_templates"): (lambda v: 1 <= v <= 100, "between 1 and 100"),
    ("mqtt", "port"): (lambda v: 1 <= v <= 65535, "a TCP port (1-65535)"),
    ("mqtt", "qos"): (lambda v: v in (0, 1, 2), "0, 1 or 2"),
    ("mqtt", "keepalive"): (lambda v: 5 <= v <= 3600, "between 5 and 3600 seconds"),
    ("mqtt", "discovery_prefix"): (
        lambda v: all(p and p == p.strip() and not set(p) & set("+#\x00") for p in v.split("/")),
        "an MQTT topic prefix (non-empty '/'-separated parts without '+', '#' or spaces around)"),
    ("api", "port"): (lambda v: 0 <= v <= 65535, "a TCP port (0-65535)"),
    ("api", "max_upload_bytes"): (lambda v: 1024 <= v <= 1024 ** 3, "between 1 KiB and 1 GiB"),
    ("api", "max_bundle_bytes"): (lambda v: 1024 <= v <= 2 * 1024 ** 3,
                                  "between 1 KiB and 2 GiB"),
    ("api", "max_files"): (lambda v: 1 <= v <= 100, "between 1 and 100"),
    ("api", "workers"): (lambda v: 0 <= v <= 64, "between 0 and 64 (0 = CPUs - 1)"),
    ("api", "queue"): (lambda v: 0 <= v <= 1000, "between 0 and 1000"),
    ("api", "auth_failures_per_minute"): (lambda v: 1 <= v <= 100_000, "at least 1"),
    ("tracking", "votes_needed"): (lambda v: v >= 1, "at least 1"),
    ("tracking", "max_attempts"): (lambda v: v >= 1, "at least 1"),
    ("tracking", "iou_threshold"): (lambda v: 0.0 < v <= 1.0, "above 0 and at most 1"),
    ("tracking", "max_missed_frames"): (lambda v: v >= 0, "0 or more"),
    ("tracking", "recheck_s"): (lambda v: v > 0, "above 0"),
    ("tracking", "instant_margin"): (lambda v: 0.0 <= v <= 2.0, "between 0 and 2"),
    ("tracking", "quality_margin"): (lambda v: v >= 0, "0 or more"),
    ("camera", "width"): (lambda v: 0 <= v <= 16384, "between 0 and 16384 (0 = camera default)"),
    ("camera", "height"): (lambda v: 0 <= v <= 16384, "between 0 and 16384 (0 = camera default)"),
    ("camera", "fps"): (lambda v: 0.0 <= v <= 1000.0, "between 0 and 1000 (0 = source default)"),
    ("events", "cooldown_s"): (lambda v: v >= 0, "0 or more"),
    ("events", "outbox_max_events"): (lambda v: v >= 1, "at least 1"),
}


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config) if f.name != "source"}


def _coerce(value: Any, tp: Any, where: str, from_env: bool) -> Any:
    """Turn a TOML (or environment string) value into ``tp`` or raise naming ``where``."""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if from_env and isinstance(value, str) and isinstance(choices[0], str):
            value = value.strip()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value) if str(value) in choices else value
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: unsupported type")  # no optional keys: defaults say "unset"
    if tp is bool:
        if from_env and isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if from_env and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if from_env and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, str) and value.strip():
            return Path(value).expanduser()
        raise ConfigError(f"{where}: expected a non-empty path, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover


def _build_section(name: str, cls: type, raw: Mapping[str, Any], env: Mapping[str, str],
                   origin: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"{origin}: unknown key [{name}] {key!r} (known keys: {', '.join(sorted(known))})"
            )
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        env_name = f"{ENV_PREFIX}{name.upper()}__{f.name.upper()}"
        if env_name in env:
            val = _coerce(env[env_name], hints[f.name], env_name, from_env=True)
        elif f.name in raw:
            val = _coerce(raw[f.name], hints[f.name], f"{origin}: [{name}] {f.name}", False)
        else:
            continue
        check = _CHECKS.get((name, f.name))
        if check and not check[0](val):
            where = env_name if env_name in env else f"{origin}: [{name}] {f.name}"
            raise ConfigError(f"{where}: {val!r} must be {check[1]}")
        values[f.name] = val
    return cls(**values)


def _check_env(env: Mapping[str, str], sections: Mapping[str, type]) -> None:
    """Refuse misspelt overrides: ``EDGE_FACE_MQTT__HOTS`` must not be silently ignored."""
    for var in env:
        if not var.startswith(ENV_PREFIX) or var == ENV_CONFIG_PATH:
            continue
        rest = var[len(ENV_PREFIX):]
        if "__" not in rest:
            continue  # other EDGE_FACE_* variables (not config overrides) are left alone
        section, _, key = rest.partition("__")
        cls = sections.get(section.lower())
        if cls is None:
            raise ConfigError(f"{var}: unknown section {section.lower()!r}")
        if key.lower() not in {f.name for f in dataclasses.fields(cls)}:
            raise ConfigError(f"{var}: unknown key {key.lower()!r} in section [{section.lower()}]")


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    """Load the TOML file (explicit path, ``EDGE_FACE_CONFIG``, or the default if it exists).

    An explicitly named file that is missing is an error; the default path being absent is not
    (a developer laptop has no ``/etc/edge-face``), then defaults and environment apply.
    """
    env = os.environ if env is None else env
    explicit = path if path is not None else env.get(ENV_CONFIG_PATH)
    cfg_path = Path(explicit).expanduser() if explicit else DEFAULT_CONFIG_PATH
    raw: dict[str, Any] = {}
    origin = "defaults"
    if cfg_path.exists():
        try:
            raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{cfg_path}: not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{cfg_path}: cannot read: {exc}") from None
        origin = str(cfg_path)
    elif explicit:
        raise ConfigError(f"{cfg_path}: config file not found")

    sections = _sections()
    for name, value in raw.items():
        if name not in sections:
            raise ConfigError(
                f"{origin}: unknown section [{name}] (known: {', '.join(sorted(sections))})"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: [{name}] must be a table")
    _check_env(env, sections)
    built = {name: _build_section(name, cls, raw.get(name, {}), env, origin)
             for name, cls in sections.items()}
    config = Config(**built, source=origin)
    _cross_checks(config)
    return config


_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _cross_checks(cfg: Config) -> None:
    """Rules that tie keys together; each message names every key involved."""
    api = cfg.api
    where = f"{cfg.source}: [api]"
    if bool(api.tls_cert) != bool(api.tls_key):
        raise ConfigError(f"{where} tls_cert and tls_key must be set together")
    if api.enabled and not is_loopback(api.host) and not api.tls_cert and not api.allow_insecure:
        raise ConfigError(
            f"{where} host = {api.host!r} is reachable from other machines: set tls_cert and "
            "tls_key, or allow_insecure = true to accept tokens and faces in clear text")


def config_as_dict(cfg: Config) -> dict[str, Any]:
    """Plain, JSON-able view (paths as strings, secrets masked) for `edge-face config show`."""
    out: dict[str, Any] = {}
    for name in _sections():
        section = dataclasses.asdict(getattr(cfg, name))
        for key, val in section.items():
            if isinstance(val, Path):
                section[key] = str(val)
            if key == "password" and val:
                section[key] = "***"
        out[name] = section
    return out

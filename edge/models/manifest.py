"""The model manifest: the single statement of which model files edge-face trusts.

Why a manifest rather than constants in code: the fleet operator audits it, Ansible can check the
prepared sha256 on a device, and a new model version is one reviewed text change.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import contextlib

from edge.errors import ModelError

ROLES = ("detector", "embedder")


@dataclass(frozen=True)
class ModelSpec:
    role: str
    id: str
    description: str
    licence: str
    member: str
    source_sha256: str
    prepared_file: str
    prepared_sha256: str
    input_name: str

    @property
    def source_file(self) -> str:
        return Path(self.member).name


@dataclass(frozen=True)
class WheelSpec:
    requirement: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    wheel: WheelSpec
    models: dict[str, ModelSpec]

    def model(self, role: str) -> ModelSpec:
        try:
            return self.models[role]
        except KeyError:
            raise ModelError(f"model manifest has no {role!r} model") from None


def manifest_path() -> Path:
    """The wheel carries the manifest inside the package; a source checkout has it in models/."""
    packaged = Path(__file__).with_name("manifest.toml")
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "models" / "manifest.toml"


def load_manifest(path: Path | None = None) -> Manifest:
    path = path or manifest_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"cannot read model manifest {path}: {exc}") from None
    wheel = WheelSpec(**raw["wheel"])
    models = {}
    for role, entry in raw["models"].items():
        models[role] = ModelSpec(
            role=role,
            id=entry["id"],
            description=entry["description"],
            licence=entry["licence"],
            member=entry["member"],
            source_sha256=entry["source_sha256"],
            prepared_file=entry["prepared_file"],
            prepared_sha256=entry.get("prepared_sha256", ""),
            input_name=entry["input_name"],
        )
    return Manifest(wheel=wheel, models=models)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prepared_path(models_dir: Path, spec: ModelSpec) -> Path:
    return models_dir / spec.prepared_file


def verified_sha256(path: Path, expected: str) -> bool:
    """``sha256_file(path) == expected``, remembered in a stamp next to the file.

    Hashing the 38.7 MB SFace graph costs ~60 ms at every start of every CLI command; the stamp
    records size and mtime of the file that passed, so an unchanged file is not hashed again and
    any rewrite of it is. A read-only models dir just means hashing every time.
    """
    stamp = path.with_name(path.name + ".verified")
    st = path.stat()
    key = f"{expected} {st.st_size} {st.st_mtime_ns}"
    try:
        if stamp.read_text(encoding="ascii").strip() == key:
            return True
    except OSError:
        pass
    if sha256_file(path) != expected:
        return False
    with contextlib.suppress(OSError):
        stamp.write_text(key + "\n", encoding="ascii")
    return True


def known_sha256(path: Path) -> str:
    """The file's sha256: from its ``verified_sha256`` stamp while the file is unchanged (no
    hashing at each start), else computed."""
    st = path.stat()
    with contextlib.suppress(OSError, ValueError):
        digest, size, mtime = path.with_name(path.name + ".verified").read_text(
            encoding="ascii").split()
        if (int(size), int(mtime)) == (st.st_size, st.st_mtime_ns) and len(digest) == 64:
            return digest
    return sha256_file(path)

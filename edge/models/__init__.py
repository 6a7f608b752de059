"""Model manifest, fetching and preparation (see models/manifest.toml)."""

from __future__ import annotations

from pathlib import Path

from edge.errors import ModelError
from edge.models.manifest import (
    Manifest,
    ModelSpec,
    load_manifest,
    prepared_path,
    verified_sha256,
)

__all__ = ["Manifest", "ModelSpec", "load_manifest", "resolve_prepared"]


def resolve_prepared(models_dir: Path, role: str, manifest: Manifest | None = None,
                     check_hash: bool = True) -> tuple[ModelSpec, Path]:
    """The prepared file for ``role``, verified against the manifest, or a clear error."""
    manifest = manifest or load_manifest()
    spec = manifest.model(role)
    path = prepared_path(models_dir, spec)
    if not path.is_file():
        raise ModelError(
            f"prepared {role} model {path} is missing; run `edge-face models fetch` and "
            "`edge-face models prepare` (or `make setup`)"
        )
    if check_hash and spec.prepared_sha256 and not verified_sha256(path, spec.prepared_sha256):
        raise ModelError(
            f"{path} does not match the manifest's sha256; run `edge-face models prepare --force`"
        )
    return spec, path

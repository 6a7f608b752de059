"""Config: every wrong key or value stops start-up with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import load_config
from edge.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, ""), env={})
    assert cfg.inference.backend == "auto"
    assert cfg.matching.threshold == pytest.approx(0.363)


def test_values_from_file(tmp_path: Path) -> None:
    text = '[models]\ndir = "/x/m"\n[inference]\nthreads = 2\n'
    cfg = load_config(_write(tmp_path, text), env={})
    assert cfg.models.dir == Path("/x/m")
    assert cfg.inference.threads == 2


def test_env_overrides_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[inference]\nthreads = 2\n")
    cfg = load_config(path, env={"EDGE_FACE_INFERENCE__THREADS": "3",
                                 "EDGE_FACE_EVENTS__INCLUDE_LABEL": "true",
                                 "EDGE_FACE_CAMERA__SOURCE": "/tmp/door.mp4"})
    assert cfg.inference.threads == 3
    assert cfg.events.include_label is True
    assert cfg.camera.source == "/tmp/door.mp4"


def test_config_path_from_env(tmp_path: Path) -> None:
    path = _write(tmp_path, "[device]\nid = \"door-7\"\n")
    assert load_config(env={"EDGE_FACE_CONFIG": str(path)}).device.id == "door-7"


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("[inferense]\nthreads = 1\n", {}, "unknown section [inferense]"),
        ("[inference]\nthread = 1\n", {}, "unknown key [inference] 'thread'"),
        ("[inference]\nthreads = \"two\"\n", {}, "[inference] threads: expected an integer"),
        ("[inference]\nbackend = \"cuda\"\n", {}, "[inference] backend: 'cuda' is not one of"),
        ("[inference]\nthreads = -1\n", {}, "[inference] threads: -1 must be between 0 and 256"),
        ("[mqtt]\nport = 70000\n", {}, "[mqtt] port: 70000 must be a TCP port"),
        ("[events]\ninclude_label = \"yes\"\n", {}, "[events] include_label: expected true or"),
        ("inference = 3\n", {}, "[inference] must be a table"),
        ("[inference\n", {}, "not valid TOML"),
        ("", {"EDGE_FACE_INFERENCE__THREDS": "1"}, "EDGE_FACE_INFERENCE__THREDS: unknown key"),
        ("", {"EDGE_FACE_INFERENCES__THREADS": "1"}, "EDGE_FACE_INFERENCES__THREADS: unknown sec"),
        ("", {"EDGE_FACE_INFERENCE__THREADS": "x"}, "EDGE_FACE_INFERENCE__THREADS: expected an"),
        ("", {"EDGE_FACE_DETECTION__INPUT_SIZE": "100"}, "must be a multiple of 32"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, env: dict[str, str],
                                  needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), env=env)
    assert needle in str(info.value)


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_cli_reports_config_error_with_exit_code(tmp_path: Path) -> None:
    from edge.cli import main

    path = _write(tmp_path, "[camera]\nsorce = \"x\"\n")
    assert main(["--config", str(path), "config", "check"]) == 78


def test_reference_documents_every_key() -> None:
    """docs/config.md must name every key: operators configure from it, not from the code."""
    import dataclasses

    from edge.config import _sections

    doc = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    missing = [f"[{name}] {f.name}" for name, cls in _sections().items()
               for f in dataclasses.fields(cls)
               if f"`EDGE_FACE_{name.upper()}__{f.name.upper()}`" not in doc]
    assert not missing, f"undocumented config keys: {missing}"

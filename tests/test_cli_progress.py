"""Progress bars of the long commands: drawn on a terminal, absent from pipes and ``--json``.

The terminal is a real pseudo-terminal (``pty``) holding the command's stderr while its stdout
stays a pipe, as when a person runs it and a script reads the result; the bars are tqdm's own
output, read back from the terminal. Models, photos and bundles are the real ones.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from test_gallery_cli import add, run_json, write_config

from edge.cli.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_draws_every_step_on_a_terminal() -> None:
    out = _Terminal()
    with progress_bar("enroll", "photo", stream=out) as bar:
        assert bar is not None
        for done in range(1, 4):
            bar(done, 3)
    text = out.getvalue()
    assert "enroll" in text and "3/3" in text


@pytest.mark.parametrize("enabled, stream", [(False, _Terminal()), (True, io.StringIO())])
def test_no_bar_when_disabled_or_not_a_terminal(enabled: bool, stream: io.StringIO) -> None:
    with progress_bar("enroll", "photo", enabled=enabled, stream=stream) as bar:
        assert bar is None
    assert stream.getvalue() == ""


def _env(tmp_path: Path, models_dir: Path) -> dict[str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_FACE_")}
    env.update({"EDGE_FACE_MODELS__DIR": str(models_dir),
                "EDGE_FACE_STORAGE__DATA_DIR": str(tmp_path / "data"),
                "EDGE_FACE_STORAGE__KEY_FILE": str(tmp_path / "keys" / "k"),
                "EDGE_FACE_CONFIG": str(tmp_path / "none.toml"), "TERM": "xterm"})
    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    return env


def _on_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``edge-face ARGS`` with stderr on a pseudo-terminal; (exit code, stdout, terminal)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out = proc.stdout.read().decode() if proc.stdout else ""
    code = proc.wait(timeout=300)
    os.close(leader)
    return code, out, seen.decode(errors="replace")


def _person(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "edge.cli", "person", "add", "--consent-by", "A",
                          "--purpose", "door", "--json"], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout)["id"]


def test_enroll_shows_progress_on_a_terminal_only(tmp_path: Path, models_dir: Path,
                                                  fixture_dir: Path) -> None:
    photos = [str(fixture_dir / n) for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    env = _env(tmp_path / "tty", models_dir)  # one gallery per run: one human, one id
    code, out, terminal = _on_terminal(["enroll", _person(env), *photos], env)
    assert code == 0, terminal
    assert "enroll" in terminal and "3/3" in terminal and "photo" in terminal
    assert out.startswith("3 template(s) added")  # the result is unchanged, on stdout
    env = _env(tmp_path / "json", models_dir)
    code, out, terminal = _on_terminal(["enroll", _person(env), *photos, "--json"], env)
    assert code == 0 and terminal.strip() == ""
    assert json.loads(out)["templates_added"] == 3
    env = _env(tmp_path / "pipe", models_dir)
    piped = subprocess.run([sys.executable, "-m", "edge.cli", "enroll", _person(env), *photos],
                           env=env, capture_output=True, text=True, timeout=300, check=False)
    assert piped.returncode == 0 and piped.stderr == ""


def test_gallery_import_shows_progress_per_person(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    operator = write_config(tmp_path, "operator")
    device = write_config(tmp_path, "device")
    keys = run_json(capsys, operator, "gallery", "keygen")
    trusted = tmp_path / "device" / "trusted"
    trusted.mkdir(parents=True)
    (trusted / "operator.pub").write_bytes(Path(keys["public_key"]).read_bytes())
    for i in range(5):
        add(capsys, operator, label=f"Person {i}")
    bundle = tmp_path / "gallery.bundle"
    run_json(capsys, operator, "gallery", "export", str(bundle))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_FACE_")}
    code, out, terminal = _on_terminal(["--config", str(device), "gallery", "import",
                                        str(bundle)], env)
    assert code == 0, terminal
    assert "import" in terminal and "5/5" in terminal and "person" in terminal
    assert "persons +5" in out


def test_models_prepare_shows_its_steps(tmp_path: Path, models_dir: Path) -> None:
    target = tmp_path / "models"
    shutil.copytree(models_dir / "source", target / "source")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_FACE_")}
    env["EDGE_FACE_MODELS__DIR"] = str(target)
    code, out, terminal = _on_terminal(["models", "prepare", "--no-verify"], env)
    assert code == 0, terminal
    assert "prepare models" in terminal and "2/2" in terminal
    assert out.count("\nok ") + out.startswith("ok ") == 2
    piped = subprocess.run([sys.executable, "-m", "edge.cli", "models", "prepare"], env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert piped.returncode == 0 and piped.stderr == ""  # nothing to do, and no bar in a pipe

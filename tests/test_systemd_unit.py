"""The systemd unit, checked by systemd itself (`systemd-analyze`), not by reading it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "edge-face.service"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointed at this checkout's entry point, which exists."""
    exe = Path(sys.executable).with_name("edge-face")
    text = UNIT.read_text().replace("/opt/edge-face/venv/bin/edge-face", str(exe))
    path = tmp_path / "edge-face.service"
    path.write_text(text)
    return path


def test_unit_verifies_clean(unit: Path) -> None:
    proc = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "edge-face.service" not in proc.stderr, proc.stderr


def test_unit_is_hardened(unit: Path) -> None:
    proc = subprocess.run([ANALYZE, "security", "--offline=true", str(unit)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for edge-face\.service: ([0-9.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.5


def test_unit_contract() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "RestartPreventExitStatus=78",
                 "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "User=edge-face"):
        assert line in text, line

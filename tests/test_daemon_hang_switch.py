"""The test-only hang switch: inert unless armed by its environment variable and its file.

The watchdog restart it exists for is proven on a real systemd in tests/test_e2e_fleet.py; here
only the switch itself, and that no config file or config override can arm it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge.config import load_config
from edge.daemon.faults import HANG_FILE_ENV, HangSwitch
from edge.errors import ConfigError


def test_unarmed_switch_never_blocks(tmp_path: Path) -> None:
    HangSwitch({}).check()
    flag = tmp_path / "hang"
    armed = HangSwitch({HANG_FILE_ENV: str(flag)})
    armed.check()  # armed, but the file does not exist yet


def test_armed_switch_blocks_once_the_file_exists(tmp_path: Path) -> None:
    flag = tmp_path / "hang"
    flag.touch()
    switch = HangSwitch({HANG_FILE_ENV: str(flag)})
    worker = threading.Thread(target=switch.check, daemon=True)
    worker.start()
    worker.join(0.5)
    assert worker.is_alive(), "the loop must stay blocked (daemon thread, ends with pytest)"


def test_switch_is_not_a_config_key(tmp_path: Path) -> None:
    """No [test] section, and the variable is not read as a config override."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[test]\nhang_file = '/tmp/x'\n")
    with pytest.raises(ConfigError, match=r"unknown section \[test\]"):
        load_config(cfg, env={})
    load_config(None, env={HANG_FILE_ENV: str(tmp_path / "hang")})  # accepted, and ignored

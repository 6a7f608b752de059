"""The README's commands install what the tests need: checked against make's own expansion."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def make_variables() -> dict[str, str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-pn", "-C", str(ROOT), "lint"], capture_output=True,
                         text=True, timeout=60).stdout
    values = {}
    for line in out.splitlines():
        name, sep, value = line.partition(" := ")
        if sep and name.isidentifier():
            values[name] = value
    return values


def test_make_test_installs_every_system_package_the_tests_use() -> None:
    v = make_variables()
    installed = set(v["TEST_DEB_PACKAGES"].split())
    # The e2e needs these; a list expanded before it was defined once left them out silently.
    assert set(v["E2E_DEB_PACKAGES"].split()) <= installed
    assert set(v["DEMO_DEB_PACKAGES"].split()) <= installed
    assert {"chromium", "systemd"} <= installed

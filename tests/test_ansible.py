"""The Ansible role and playbook: `--syntax-check` and `ansible-lint --profile production`.

Both tools come with the dev extra (pyproject.toml), so `make test` has them. Applying the role
to a real systemd is the end-to-end test's part (tests/e2e/).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ANSIBLE = Path(__file__).resolve().parents[1] / "ansible"
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"),
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               ANSIBLE_LOCAL_TEMP=os.environ.get("TMPDIR", "/tmp"), NO_COLOR="1")
    return subprocess.run(args, cwd=ANSIBLE, env=env, capture_output=True, text=True,
                          timeout=600)


def test_playbook_syntax() -> None:
    proc = _run(str(BIN / "ansible-playbook"), "--syntax-check", "site.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ansible_lint_production_profile() -> None:
    proc = _run(str(BIN / "ansible-lint"), "--offline", "--profile", "production", "--nocolor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr

"""The Ansible role and playbook: `--syntax-check` and `ansible-lint --profile production`.

Both tools come with the dev extra (pyproject.toml), so `make test` has them. Applying the role
to a real systemd is the end-to-end test's part (tests/test_e2e_fleet.py).
"""

from __future__ import annotations

import json
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


def test_config_template_renders_a_config_edge_face_accepts(tmp_path: Path) -> None:
    """The role's config.toml.j2, with the example site's variables and extra keys, is a
    config `edge-face config check` accepts (the role's `validate:` step, without a device)."""
    out = tmp_path / "config.toml"
    extra = {"edge_face_config_extra": {"matching": {"threshold": 0.4},
                                        "tracking": {"votes_needed": 3}},
             "edge_face_mqtt_password": "s3cret", "edge_face_mqtt_ca_pem": "PEM"}
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    play = tmp_path / "render.yml"
    play.write_text(f"""---
- name: Render the config template
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - {ANSIBLE}/roles/edge_face/defaults/main.yml
    - {ANSIBLE}/inventory/example/group_vars/site_lyon.yml
  tasks:
    - name: Render
      ansible.builtin.template:
        src: {ANSIBLE}/roles/edge_face/templates/config.toml.j2
        dest: {out}
        mode: "0600"
""")
    proc = _run(str(BIN / "ansible-playbook"), "-i", "localhost,", str(play),
                "-e", f"@{tmp_path / 'extra.json'}",
                "-e", f"ansible_python_interpreter={sys.executable}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check = subprocess.run([str(BIN / "edge-face"), "--config", str(out), "config", "show",
                            "--json"], capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items()
                                if not k.startswith("EDGE_FACE_")})
    assert check.returncode == 0, check.stderr + out.read_text()
    shown = json.loads(check.stdout)
    assert shown["events"]["include_label"] is True  # from site_lyon.yml
    assert shown["camera"]["source"] == "/dev/video0"
    assert shown["matching"]["threshold"] == 0.4 and shown["tracking"]["votes_needed"] == 3
    assert shown["mqtt"]["password_file"] == "/etc/edge-face/mqtt-password"
    assert shown["mqtt"]["ca_file"] == "/etc/edge-face/mqtt-ca.pem"
    assert "s3cret" not in out.read_text(), "a secret in config.toml"
    assert shown["storage"]["data_dir"] == "/var/lib/edge-face/data"
    assert shown["models"]["dir"] == "/var/cache/edge-face/models"

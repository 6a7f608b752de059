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
from typing import Any

import yaml

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


ROLE_TASKS = ANSIBLE / "roles" / "edge_face" / "tasks"


def _role_task(file: str, name_start: str) -> dict[str, Any]:
    """One task of the role, as written (the test runs the role's own definition)."""
    (task,) = [t for t in yaml.safe_load((ROLE_TASKS / file).read_text())
               if t["name"].startswith(name_start)]
    return task


def _run_tasks(tmp_path: Path, tasks: list[dict[str, Any]],
               variables: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The tasks on localhost, as root-owned files (this host has no edge-face user)."""
    for task in tasks:
        task.pop("notify", None)
        for module in task.values():
            if isinstance(module, dict):
                module.pop("owner", None)
                module.pop("group", None)
    play = [{"name": "Role tasks", "hosts": "localhost", "connection": "local",
             "gather_facts": False, "vars": variables, "tasks": tasks}]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    return _run(str(BIN / "ansible-playbook"), "-i", "localhost,", str(path),
                "-e", f"ansible_python_interpreter={sys.executable}")


def _prefix(tmp_path: Path) -> Path:
    """An install prefix whose venv is this checkout's (the role calls <prefix>/venv/bin/...)."""
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    (prefix / "venv").symlink_to(BIN.parent, target_is_directory=True)
    return prefix


def test_config_validation_keeps_the_old_config_on_a_wrong_key(tmp_path: Path) -> None:
    """The role's template task with its `validate:`: `edge-face config check` refuses a
    misspelt key, the task fails and the device's running config is left as it was."""
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    old = conf_dir / "config.toml"
    old.write_text("[device]\nid = \"door-1\"\n")
    task = _role_task("config.yml", "Write the config file")
    task["ansible.builtin.template"]["src"] = str(ANSIBLE / "roles" / "edge_face" / "templates"
                                                  / "config.toml.j2")
    defaults = yaml.safe_load((ANSIBLE / "roles" / "edge_face" / "defaults" / "main.yml")
                              .read_text())
    defaults = {k: v for k, v in defaults.items() if not k.endswith("_src")
                and k not in ("edge_face_wheel", "edge_face_models_src_dir")}
    base = {**defaults, "edge_face_prefix": str(_prefix(tmp_path)),
            "edge_face_config_dir": str(conf_dir), "edge_face_device_id": "door-1"}

    bad = _run_tasks(tmp_path, [dict(task)], {
        **base, "edge_face_config_extra": {"matching": {"treshold": 0.4}}})
    assert bad.returncode != 0, bad.stdout
    assert "treshold" in bad.stdout + bad.stderr, bad.stdout  # the message names the key
    assert old.read_text() == "[device]\nid = \"door-1\"\n"

    task = _role_task("config.yml", "Write the config file")
    task["ansible.builtin.template"]["src"] = str(ANSIBLE / "roles" / "edge_face" / "templates"
                                                  / "config.toml.j2")
    good = _run_tasks(tmp_path, [task], base)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "[inference]" in old.read_text()


def test_models_are_sha256_checked_before_they_replace_the_old_ones(
        tmp_path: Path, models_dir: Path) -> None:
    """The role's manifest and copy tasks: a model file whose sha256 is not the installed
    package's is refused, and the device's good copy stays."""
    name = "yunet-2023mar.fp32.onnx"
    src, dest = tmp_path / "controller", tmp_path / "device"
    src.mkdir()
    dest.mkdir()
    good = (models_dir / name).read_bytes()
    (dest / name).write_bytes(good)
    (src / name).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit flipped
    variables = {"edge_face_prefix": str(_prefix(tmp_path)),
                 "edge_face_models_src_dir": str(src), "edge_face_models_dir": str(dest),
                 "edge_face_model_files": [name]}

    def tasks() -> list[dict[str, Any]]:
        return [_role_task("models.yml", "Read the models' sha256"),
                _role_task("models.yml", "Copy the prepared models")]

    refused = _run_tasks(tmp_path, tasks(), variables)
    assert refused.returncode != 0, refused.stdout
    assert "failed to validate" in refused.stdout, refused.stdout[-3000:]
    assert (dest / name).read_bytes() == good

    (dest / name).unlink()
    (src / name).write_bytes(good)
    accepted = _run_tasks(tmp_path, tasks(), variables)
    assert accepted.returncode == 0, accepted.stdout[-3000:] + accepted.stderr
    assert (dest / name).read_bytes() == good

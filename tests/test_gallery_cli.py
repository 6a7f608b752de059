"""The CLI contract of ``edge-face person|gallery|audit|key``: exact JSON shapes, readable text,
one-line errors and exit codes, through the real ``edge.cli.main`` and a real config file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from edge.gallery.ids import is_id

REPO = Path(__file__).resolve().parents[1]


def write_config(root: Path, name: str) -> Path:
    base = root / name
    cfg = root / f"{name}.toml"
    cfg.write_text(
        "[storage]\n"
        f'data_dir = "{base / "data"}"\n'
        f'key_file = "{base / "keys" / "template.key"}"\n'
        f'fleet_key_file = "{root / "fleet.key"}"\n'
        f'signing_key_file = "{root / "operator.key"}"\n'
        f'trusted_keys_dir = "{base / "trusted"}"\n',
        encoding="utf-8")
    return cfg


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path, "device")


def run(capsys: pytest.CaptureFixture[str], cfg: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(cfg), *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], cfg: Path, *args: str) -> dict:
    code, out, err = run(capsys, cfg, *args, "--json")
    assert code == 0, err
    assert out.count("\n") == 1  # exactly one JSON document
    return json.loads(out)


def add(capsys: pytest.CaptureFixture[str], cfg: Path, label: str = "Ann Example") -> str:
    data = run_json(capsys, cfg, "person", "add", "--label", label, "--consent-by", "Ann",
                    "--purpose", "door access", "--expires", "2099-01-01T00:00:00Z",
                    "--evidence", "form 12")
    assert list(data) == ["id"] and is_id(data["id"], "p")
    return data["id"]


def test_person_lifecycle_json_shapes(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    pid = add(capsys, cfg)
    listed = run_json(capsys, cfg, "person", "list")
    assert list(listed) == ["persons"]
    (row,) = listed["persons"]
    assert set(row) == {"id", "label", "created_at", "updated_at", "origin", "consent",
                        "templates", "consent_expires_at"}
    assert (row["id"], row["label"], row["consent"], row["templates"]) == (
        pid, "Ann Example", "active", 0)
    assert row["consent_expires_at"] is not None  # this person's consent has an end

    shown = run_json(capsys, cfg, "person", "show", pid)
    assert set(shown) == {"id", "label", "created_at", "updated_at", "origin", "consent",
                          "consents", "templates"}
    assert shown["consents"][0]["expires_at"] == "2099-01-01T00:00:00.000000Z"
    assert shown["consents"][0]["evidence"] == "form 12"

    renewed = run_json(capsys, cfg, "person", "consent", pid, "--consent-by", "Ann",
                       "--purpose", "door access")
    assert renewed["person_id"] == pid and is_id(renewed["consent_id"], "c")

    exported = run_json(capsys, cfg, "person", "export", pid)
    assert set(exported) == {"exported_at", "person", "consent", "consents", "templates",
                             "audit"}
    assert exported["templates"] == {"count": 0, "items": []}
    assert exported["audit"][-1]["action"] == "person_exported"

    withdrawn = run_json(capsys, cfg, "person", "withdraw-consent", pid)
    assert withdrawn == {"person_id": pid, "consents_withdrawn": 2, "templates_removed": 0}

    receipt = run_json(capsys, cfg, "person", "delete", pid)
    assert set(receipt) == {"person_id", "deleted_at", "removed", "audit_seq", "audit_hash",
                            "wal_checkpointed"}
    assert receipt["removed"] == {"templates": 0, "consents": 2, "label": True}

    code, out, err = run(capsys, cfg, "person", "show", pid, "--json")
    assert (code, out) == (1, "")
    assert err == f"edge-face: error: unknown person id {pid!r}\n"

    assert run_json(capsys, cfg, "audit", "verify") == {"ok": True, "entries": 5}
    assert run_json(capsys, cfg, "gallery", "sweep") == {"swept": []}
    rotated = run_json(capsys, cfg, "key", "rotate")
    assert set(rotated) == {"rotated_at", "templates", "key_file", "audit_hash"}


def test_text_output_is_readable(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    code, out, _ = run(capsys, cfg, "person", "add", "--label", "Bo", "--consent-by", "Bo",
                       "--purpose", "door")
    assert code == 0 and out.startswith("added person p_")
    pid = out.split()[-1]
    code, out, _ = run(capsys, cfg, "person", "list")
    assert code == 0 and out.splitlines()[0].split() == ["ID", "CONSENT", "TEMPLATES", "LABEL"]
    assert pid in out and "Bo" in out
    code, out, _ = run(capsys, cfg, "person", "show", pid)
    assert "label     Bo" in out and "by Bo for door" in out
    code, out, _ = run(capsys, cfg, "audit", "verify")
    assert out == "audit log ok (1 entries)\n"
    code, out, _ = run(capsys, cfg, "person", "delete", pid)
    assert out.startswith(f"deleted person {pid}")


@pytest.mark.parametrize("args, message", [
    (["--expires", "next tuesday"], "--expires: 'next tuesday' is not an ISO 8601 time"),
    (["--expires", "2001-01-01"], "is not in the future"),
    (["--purpose", " "], "consent purpose must not be empty"),
])
def test_bad_person_add_is_one_clear_line(capsys: pytest.CaptureFixture[str], cfg: Path,
                                          args: list[str], message: str) -> None:
    base = {"--consent-by": "X", "--purpose": "door"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["person", "add", "--json", *[x for kv in base.items() for x in kv]]
    code, out, err = run(capsys, cfg, *argv)
    assert (code, out) == (1, "")
    assert err.startswith("edge-face: error: ") and message in err and err.count("\n") == 1
    assert run_json(capsys, cfg, "person", "list") == {"persons": []}


def test_broken_audit_chain_exits_1(capsys: pytest.CaptureFixture[str], cfg: Path,
                                    tmp_path: Path) -> None:
    add(capsys, cfg)
    add(capsys, cfg, "Second")
    conn = sqlite3.connect(tmp_path / "device" / "data" / "gallery.db")
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    conn.commit()
    conn.close()
    code, out, _ = run(capsys, cfg, "audit", "verify", "--json")
    assert code == 1
    assert json.loads(out) == {"ok": False, "entries": 2, "first_bad_seq": 2,
                               "reason": "hash does not match the entry's content"}
    code, out, _ = run(capsys, cfg, "audit", "verify")
    assert code == 1 and "BROKEN at entry 2" in out


def test_fleet_bundle_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    operator = write_config(tmp_path, "operator")
    device = write_config(tmp_path, "device")
    keys = run_json(capsys, operator, "gallery", "keygen")
    assert set(keys) == {"signing_key", "public_key", "fleet_key", "key_id", "fleet_key_id",
                         "created"}
    trusted = tmp_path / "device" / "trusted"
    trusted.mkdir(parents=True)
    (trusted / "operator.pub").write_bytes(Path(keys["public_key"]).read_bytes())
    pid = add(capsys, operator)
    bundle = tmp_path / "gallery.bundle"
    exported = run_json(capsys, operator, "gallery", "export", str(bundle))
    assert set(exported) == {"path", "bundle_id", "created_at", "signer", "persons",
                             "templates"}
    assert exported["persons"] == 1 and exported["signer"] == keys["key_id"]
    imported = run_json(capsys, device, "gallery", "import", str(bundle))
    assert imported["status"] == "imported" and imported["persons_added"] == 1
    assert run_json(capsys, device, "person", "show", pid)["origin"] == "bundle"
    again = run_json(capsys, device, "gallery", "import", str(bundle))
    assert again["status"] == "already-imported"

    data = bytearray(bundle.read_bytes())
    data[-10] ^= 0xFF
    bundle.write_bytes(bytes(data))
    code, out, err = run(capsys, device, "gallery", "import", str(bundle), "--force", "--json")
    assert (code, out) == (1, "")
    assert "signature does not verify" in err


def test_missing_required_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                                    cfg: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(cfg), "person", "add", "--consent-by", "X"])
    assert exc.value.code == 2
    assert "--purpose" in capsys.readouterr().err


def test_installed_command_as_a_real_process(cfg: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge.cli", "--config", str(cfg), *args],
                              capture_output=True, text=True, cwd=REPO, check=False)

    added = cli("person", "add", "--json", "--label", "L", "--consent-by", "W", "--purpose", "P")
    assert added.returncode == 0, added.stderr
    pid = json.loads(added.stdout)["id"]
    missing = cli("person", "delete", "p_" + "a" * 26, "--json")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        "edge-face: error: unknown person id 'p_aaaaaaaaaaaaaaaaaaaaaaaaaa'"]
    assert json.loads(cli("person", "delete", pid, "--json").stdout)["person_id"] == pid

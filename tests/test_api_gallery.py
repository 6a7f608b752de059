"""Signed gallery bundles over the admin API: from the operator's station to a door.

Two real daemons: the *station* holds the operator's keys (``gallery keygen``) and enrolls; the
*door* holds only the fleet key and the operator's public key, imports the station's bundle over
HTTP and then recognises the person. Tampering, the wrong type, an empty or too large body and a
full disk are refused without changing the door's gallery.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_daemon import ApiDaemon, cli_json, make_daemon, new_person
from mqtt_broker import Broker

from edge.gallery.bundle import public_key_path

FACES = Path(__file__).parent / "fixtures" / "faces"
OCTETS = {"content-type": "application/octet-stream"}
BUNDLE_LIMIT = 256 * 1024


def photo(name: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (name, (FACES / name).read_bytes(), "image/jpeg"))]


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
            module_broker: Broker) -> Iterator[ApiDaemon]:
    daemon = make_daemon(tmp_path_factory.mktemp("operator"), models_dir, module_broker,
                         EDGE_FACE_DEVICE__ID="operator-station")
    keys = cli_json(daemon.env, "gallery", "keygen")
    assert len(keys["created"]) == 3
    daemon.start(wait_ready=True)
    yield daemon
    daemon.stop()


def provision_door(workdir: Path, station: ApiDaemon, models_dir: Path, broker: Broker | None,
                   **extra: str) -> ApiDaemon:
    """A door that trusts the station's signatures and holds the fleet key, nothing more."""
    door = make_daemon(workdir, models_dir, broker,
                       **{"EDGE_FACE_API__MAX_BUNDLE_BYTES": str(BUNDLE_LIMIT), **extra})
    signing = Path(station.env["EDGE_FACE_STORAGE__SIGNING_KEY_FILE"])
    trusted = Path(door.env["EDGE_FACE_STORAGE__TRUSTED_KEYS_DIR"])
    trusted.mkdir(parents=True)
    shutil.copy(public_key_path(signing), trusted / "operator.pub")
    fleet = Path(door.env["EDGE_FACE_STORAGE__FLEET_KEY_FILE"])
    fleet.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(station.env["EDGE_FACE_STORAGE__FLEET_KEY_FILE"], fleet)
    fleet.chmod(0o600)
    return door


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, module_broker: Broker,
         station: ApiDaemon) -> Iterator[ApiDaemon]:
    daemon = provision_door(tmp_path_factory.mktemp("door"), station, models_dir, module_broker,
                            EDGE_FACE_DEVICE__ID="front-door")
    daemon.start(wait_ready=True)
    yield daemon
    daemon.stop()


def test_a_bundle_from_the_station_makes_the_door_recognise(station: ApiDaemon,
                                                            door: ApiDaemon) -> None:
    with station.admin() as api:
        pid = new_person(api, "Fleet member")
        assert api.post(f"/v1/persons/{pid}/faces", files=photo("obama.jpg")).status_code == 201
        r = api.get("/v1/gallery/export")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"].startswith('attachment; filename="')
        bundle = r.content
        assert b"Fleet member" not in bundle  # encrypted with the fleet key
    with door.admin() as api:
        before = api.post("/v1/identify", files=photo("obama3.jpg")).json()["faces"]
        assert before[0]["person_id"] is None
        imported = api.post("/v1/gallery/import", content=bundle, headers=OCTETS)
        assert imported.status_code == 200, imported.text
        assert imported.json()["persons_added"] == 1
        (person,) = api.get("/v1/persons").json()["persons"]
        assert (person["id"], person["origin"], person["templates"]) == (pid, "bundle", 1)
        after = api.post("/v1/identify", files=photo("obama3.jpg")).json()["faces"]
        assert (after[0]["decision"], after[0]["person_id"]) == ("match", pid)
        actors = {e["actor"] for e in api.get("/v1/audit").json()["entries"]}
        assert "api:test-admin" in actors
        assert list(Path(door.env["EDGE_FACE_STORAGE__DATA_DIR"]).glob(".import-*")) == []


def test_a_door_cannot_export_without_the_operators_key(door: ApiDaemon) -> None:
    with door.admin() as api:
        r = api.get("/v1/gallery/export")
    assert r.status_code == 409 and "operator signing key" in r.json()["detail"]


def test_bad_bundles_change_nothing(station: ApiDaemon, door: ApiDaemon) -> None:
    with station.admin() as api:
        bundle = api.get("/v1/gallery/export").content
    tampered = bytearray(bundle)
    tampered[len(tampered) // 2] ^= 0x01
    with door.admin() as api:
        before = api.get("/v1/persons").json()
        cases = [
            (bytes(tampered), OCTETS, 422),
            (b"", OCTETS, 422),
            (b"PK\x03\x04 not a bundle", OCTETS, 422),
            (bundle, {"content-type": "application/json"}, 415),
            (b"\x00" * (BUNDLE_LIMIT + 1), OCTETS, 413),
        ]
        for body, headers, status in cases:
            r = api.post("/v1/gallery/import", content=body, headers=headers)
            assert r.status_code == status, (status, r.text)
            assert r.json()["detail"]
        assert api.get("/v1/persons").json() == before
    with door.client(door.token("viewer", "read")) as viewer:
        assert viewer.post("/v1/gallery/import", content=bundle,
                           headers=OCTETS).status_code == 403
        assert viewer.get("/v1/gallery/export").status_code == 403
    leftovers = list(Path(door.env["EDGE_FACE_STORAGE__DATA_DIR"]).glob(".import-*"))
    assert leftovers == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, when the tests run as root and may mount (as in CI); skipped otherwise."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_during_an_import_is_507_and_loses_nothing(
        tmp_path: Path, tiny_disk: Path, models_dir: Path, station: ApiDaemon) -> None:
    door = provision_door(tmp_path / "full", station, models_dir, None,
                          EDGE_FACE_STORAGE__DATA_DIR=str(tiny_disk / "data"),
                          EDGE_FACE_API__MAX_BUNDLE_BYTES=str(8 * 1024 * 1024))
    door.start()
    try:
        with door.admin() as api:
            pid = new_person(api, "Kept")
            r = api.post("/v1/gallery/import", content=b"\x00" * (4 * 1024 * 1024),
                         headers=OCTETS)
            assert r.status_code == 507, r.text
            assert "no space left" in r.json()["detail"]
            assert [p["id"] for p in api.get("/v1/persons").json()["persons"]] == [pid]
            assert api.get("/v1/audit/verify").json()["ok"] is True
        assert list((tiny_disk / "data").glob(".import-*")) == []
    finally:
        door.stop()

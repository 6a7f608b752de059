"""Fleet bundles between two real galleries (an operator's and a device's), each with its own
database and template key, and real Ed25519 / AES keys made by ``generate_keys``."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from edge.gallery import BundleError, ConsentInput, GalleryKeyError, GalleryStore, NewTemplate
from edge.gallery.bundle import (
    export_bundle,
    generate_keys,
    import_bundle,
    load_signing_key,
    write_bundle,
)
from edge.gallery.ids import CONSENT, PERSON, new_id
from edge.gallery.records import Consent, SnapshotPerson, SnapshotTemplate
from edge.gallery.times import to_iso

MODEL = "sface-2021dec"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    """A settable clock (time travel for bundle dates, not a mock)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


@dataclass
class Fleet:
    root: Path
    operator: GalleryStore
    device: GalleryStore
    clock: Clock
    signing_key: Path
    fleet_key: Path
    trusted: Path

    def export(self, name: str = "b.bundle", **kw) -> Path:
        path = self.root / name
        export_bundle(self.operator, path, signing_key_file=self.signing_key,
                      fleet_key_file=self.fleet_key, **kw)
        return path

    def import_(self, path: Path, **kw) -> dict:
        return import_bundle(self.device, path, trusted_keys_dir=self.trusted,
                             fleet_key_file=self.fleet_key, **kw)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    clock = Clock()
    keys = generate_keys(tmp_path / "op" / "operator.key", tmp_path / "op" / "fleet.key")
    trusted = tmp_path / "device" / "trusted"
    trusted.mkdir(parents=True)
    (trusted / "operator.pub").write_bytes(Path(keys["public_key"]).read_bytes())
    operator = GalleryStore(tmp_path / "op" / "data", tmp_path / "op" / "template.key",
                            clock=clock)
    device = GalleryStore(tmp_path / "device" / "data", tmp_path / "device" / "template.key",
                          clock=clock)
    yield Fleet(tmp_path, operator, device, clock, tmp_path / "op" / "operator.key",
                tmp_path / "op" / "fleet.key", trusted)
    operator.close()
    device.close()


def enroll(store: GalleryStore, label: str, seed: int, n: int = 2, **consent) -> str:
    pid = store.add_person(label, ConsentInput("them", "door", **consent))
    store.add_templates(pid, MODEL, "1", [NewTemplate(unit(seed + j), {"score": 0.5 + j / 10},
                                                      f"img{j}") for j in range(n)])
    return pid


def content(store: GalleryStore) -> tuple:
    """Everything a bundle carries, as comparable values (vectors decrypted)."""
    persons = tuple(json.dumps({**store.get_person(p.id).to_dict(), "origin": None},
                               sort_keys=True)
                    for p in sorted(store.list_persons(), key=lambda p: p.id))
    vectors = tuple(sorted((tid, pid, vec.tobytes()) for tid, pid, vec
                           in store.iter_templates(MODEL)))
    return persons, vectors


def raw_rows(store: GalleryStore) -> tuple:
    conn = sqlite3.connect(store.path)
    try:
        return tuple(tuple(conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall())
                     for t in ("persons", "consents", "templates", "audit", "bundle_imports"))
    finally:
        conn.close()


def test_keygen_makes_private_files_and_keeps_existing_ones(tmp_path: Path) -> None:
    first = generate_keys(tmp_path / "k" / "op.key", tmp_path / "k" / "fleet.key")
    assert len(first["created"]) == 3
    assert (tmp_path / "k" / "op.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k" / "fleet.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k" / "op.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY")
    again = generate_keys(tmp_path / "k" / "op.key", tmp_path / "k" / "fleet.key")
    assert again["created"] == [] and again["key_id"] == first["key_id"]
    os.chmod(tmp_path / "k" / "op.key", 0o644)
    with pytest.raises(GalleryKeyError, match="chmod 600"):
        load_signing_key(tmp_path / "k" / "op.key")


def test_roundtrip_to_a_device_with_its_own_key(fleet: Fleet) -> None:
    a = enroll(fleet.operator, "Ann", 0)
    enroll(fleet.operator, None, 10, n=3, expires_at=T0 + timedelta(days=9), evidence="f1")
    local = enroll(fleet.device, "Local Only", 50)
    path = fleet.export()
    result = fleet.import_(path)
    assert result["status"] == "imported"
    assert (result["persons_added"], result["templates_added"]) == (2, 5)
    op_persons, op_vectors = content(fleet.operator)
    dev_persons, dev_vectors = content(fleet.device)
    assert set(op_persons) <= set(dev_persons)
    assert set(op_vectors) <= set(dev_vectors)
    assert fleet.device.get_person(a).origin == "bundle"
    assert fleet.device.get_person(local).origin == "local"
    assert fleet.device.verify_audit().ok
    # the device re-encrypted with its own key: no ciphertext is shared
    op_ct = {r[4] for r in raw_rows(fleet.operator)[2]}
    dev_ct = {r[5] for r in raw_rows(fleet.device)[2]}
    assert not (op_ct & dev_ct)


def test_same_bundle_twice_changes_nothing(fleet: Fleet) -> None:
    enroll(fleet.operator, "Ann", 0)
    path = fleet.export()
    fleet.import_(path)
    before = raw_rows(fleet.device)
    assert fleet.import_(path)["status"] == "already-imported"
    assert raw_rows(fleet.device) == before
    forced = fleet.import_(path, force=True)
    assert forced["persons_added"] == forced["persons_updated"] == forced["templates_added"] == 0
    assert raw_rows(fleet.device)[:3] == before[:3]


def test_deletions_and_changes_propagate(fleet: Fleet) -> None:
    ann = enroll(fleet.operator, "Ann", 0)
    bob = enroll(fleet.operator, "Bob", 10)
    local = enroll(fleet.device, "Local", 50)
    fleet.import_(fleet.export("1.bundle"))
    fleet.clock.now += timedelta(hours=1)
    fleet.operator.delete_person(ann)
    fleet.operator.withdraw_consent(bob)
    events: list[tuple] = []
    fleet.device.add_listener(events.append)
    result = fleet.import_(fleet.export("2.bundle"))
    assert (result["persons_removed"], result["persons_updated"]) == (1, 1)
    assert result["templates_removed"] == 4
    ids = {p.id for p in fleet.device.list_persons()}
    assert ann not in ids and {bob, local} <= ids
    assert fleet.device.get_person(bob).consent == "withdrawn"
    assert {pid for _, pid, _ in fleet.device.iter_templates(MODEL)} == {local}
    assert ("person_removed", ann) in events
    assert fleet.device.verify_audit().ok


def test_lapsed_consent_in_a_bundle_brings_no_templates(fleet: Fleet) -> None:
    pid = enroll(fleet.operator, "Exp", 0, expires_at=T0 + timedelta(hours=1))
    path = fleet.export()
    fleet.clock.now = T0 + timedelta(hours=2)
    result = fleet.import_(path)
    assert result["templates_skipped_no_consent"] == 2 and result["templates_added"] == 0
    assert fleet.device.get_person(pid).templates == ()


def test_bad_signature_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    enroll(fleet.operator, "Ann", 0)
    stranger = generate_keys(tmp_path / "x" / "stranger.key", fleet.fleet_key)
    path = tmp_path / "stranger.bundle"
    export_bundle(fleet.operator, path, signing_key_file=Path(stranger["signing_key"]),
                  fleet_key_file=fleet.fleet_key)
    before = raw_rows(fleet.device)
    with pytest.raises(BundleError, match="signature does not verify"):
        fleet.import_(path)
    assert raw_rows(fleet.device) == before


@pytest.mark.parametrize("where", ["header", "payload", "signature", "truncate", "magic"])
def test_tampered_bundle_is_refused(fleet: Fleet, where: str) -> None:
    enroll(fleet.operator, "Ann", 0)
    path = fleet.export()
    data = bytearray(path.read_bytes())
    if where == "header":
        data[30] ^= 0x01
    elif where == "payload":
        data[len(data) // 2] ^= 0x01
    elif where == "signature":
        data[-1] ^= 0x01
    elif where == "magic":
        data[0:4] = b"XXXX"
    else:
        data = data[: len(data) - 100]
    path.write_bytes(bytes(data))
    before = raw_rows(fleet.device)
    with pytest.raises(BundleError):
        fleet.import_(path)
    assert raw_rows(fleet.device) == before


def test_wrong_fleet_key_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    enroll(fleet.operator, "Ann", 0)
    path = fleet.export()
    other = tmp_path / "other-fleet.key"
    other.write_bytes(os.urandom(32))
    os.chmod(other, 0o600)
    with pytest.raises(BundleError, match="another fleet key"):
        import_bundle(fleet.device, path, trusted_keys_dir=fleet.trusted, fleet_key_file=other)


def test_bundle_from_the_future_is_refused_unless_forced(fleet: Fleet) -> None:
    enroll(fleet.operator, "Ann", 0)
    path = fleet.export(now=T0 + timedelta(days=1))
    before = raw_rows(fleet.device)
    with pytest.raises(BundleError, match="in the future"):
        fleet.import_(path)
    assert raw_rows(fleet.device) == before
    assert fleet.import_(path, force=True)["status"] == "imported"


def test_small_clock_skew_is_tolerated(fleet: Fleet) -> None:
    enroll(fleet.operator, "Ann", 0)
    path = fleet.export(now=T0 + timedelta(seconds=60))
    assert fleet.import_(path)["status"] == "imported"


def test_older_bundle_is_refused_unless_forced(fleet: Fleet) -> None:
    enroll(fleet.operator, "Ann", 0)
    old = fleet.export("old.bundle")
    fleet.clock.now += timedelta(hours=1)
    enroll(fleet.operator, "Bob", 10)
    new = fleet.export("new.bundle")
    fleet.import_(new)
    before = raw_rows(fleet.device)
    with pytest.raises(BundleError, match="older than the last imported"):
        fleet.import_(old)
    assert raw_rows(fleet.device) == before
    result = fleet.import_(old, force=True)
    assert result["persons_removed"] == 1  # going back to the old gallery drops Bob


def test_conflicting_bundle_is_all_or_nothing(fleet: Fleet) -> None:
    local = enroll(fleet.device, "Local", 50)
    (local_tid, _, _), *_ = list(fleet.device.iter_templates(MODEL))
    now = to_iso(T0)
    good = SnapshotPerson(new_id(PERSON), "Good", now, now,
                          (Consent(new_id(CONSENT), "x", "door", now, None, None, None),), ())
    thief = SnapshotPerson(new_id(PERSON), "Thief", now, now,
                           (Consent(new_id(CONSENT), "x", "door", now, None, None, None),),
                           (SnapshotTemplate(local_tid, MODEL, "1", unit(1), {"score": 1.0},
                                             "", now),))
    path = fleet.root / "conflict.bundle"
    write_bundle(path, [good, thief], bundle_id=new_id("b"), created_at=now,
                 signing_key=load_signing_key(fleet.signing_key),
                 fleet_key=fleet.fleet_key.read_bytes())
    before = raw_rows(fleet.device)
    with pytest.raises(BundleError, match="belongs to another person"):
        fleet.import_(path)
    assert raw_rows(fleet.device) == before
    assert [p.id for p in fleet.device.list_persons()] == [local]


def test_missing_or_empty_trusted_keys_dir(fleet: Fleet, tmp_path: Path) -> None:
    path = fleet.export()
    with pytest.raises(BundleError, match="does not exist"):
        import_bundle(fleet.device, path, trusted_keys_dir=tmp_path / "nope",
                      fleet_key_file=fleet.fleet_key)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no trusted public keys"):
        import_bundle(fleet.device, path, trusted_keys_dir=tmp_path / "empty",
                      fleet_key_file=fleet.fleet_key)
    (tmp_path / "empty" / "junk.pub").write_text("not a key")
    with pytest.raises(BundleError, match=r"junk\.pub"):
        import_bundle(fleet.device, path, trusted_keys_dir=tmp_path / "empty",
                      fleet_key_file=fleet.fleet_key)


def test_export_is_audited_without_personal_data(fleet: Fleet) -> None:
    enroll(fleet.operator, "Ann", 0)
    fleet.export()
    entry = fleet.operator.audit_entries()[-1]
    assert entry.action == "bundle_exported"
    assert entry.details == {"persons": 1, "templates": 2}
    assert entry.target_id is not None and entry.target_id.startswith("b_")

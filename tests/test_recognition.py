"""Enrollment and identification through the service layer, on real photos and real SQLite."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.gallery.errors import ConsentError, PersonNotFound
from edge.gallery.records import ConsentInput
from edge.gallery.store import GalleryStore
from edge.recognition import DuplicatePersonError, Recognizer


@pytest.fixture
def recognizer(make_config, engine) -> Recognizer:
    cfg = make_config()
    return Recognizer(cfg, GalleryStore.from_config(cfg), engine)


def _person(rec: Recognizer, label: str, expires: datetime | None = None) -> str:
    return rec.store.add_person(label, ConsentInput("the person", "door access", expires, None),
                                actor="test")


def test_enroll_then_identify(recognizer: Recognizer, fixture_dir: Path) -> None:
    obama = _person(recognizer, "Barack")
    out = recognizer.enroll(obama, [str(fixture_dir / "obama.jpg"),
                                    str(fixture_dir / "obama2.jpg")])
    results = out.pop("results")
    assert out == {"person_id": obama, "templates_added": 2, "rejected": []}
    assert [r["path"] for r in results] == [str(fixture_dir / "obama.jpg"),
                                            str(fixture_dir / "obama2.jpg")]
    assert all(r["accepted"] and r["template_id"].startswith("t_") for r in results)
    assert {t.id for t in recognizer.store.get_person(obama).templates} == {
        r["template_id"] for r in results}
    assert all(0.0 < r["quality"]["score"] <= 1.0 for r in results)
    hit = recognizer.identify(str(fixture_dir / "obama3.jpg"))
    assert hit["faces"][0]["person_id"] == obama
    assert hit["faces"][0]["decision"] == "match"
    assert "label" not in hit["faces"][0]
    miss = recognizer.identify(str(fixture_dir / "biden.jpg"))
    assert miss["faces"][0]["person_id"] is None
    assert miss["faces"][0]["decision"] == "unknown"


def test_each_bad_photo_gets_its_reason(recognizer: Recognizer, fixture_dir: Path,
                                        portraits, tmp_path: Path) -> None:
    pid = _person(recognizer, "Barack")
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((300, 300, 3), 170, np.uint8))
    blurred = tmp_path / "blur.png"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(portraits["obama"], (0, 0), 7))
    dark = tmp_path / "dark.png"
    cv2.imwrite(str(dark), (portraits["obama"] * 0.12).astype(np.uint8))
    pair = tmp_path / "pair.png"
    cv2.imwrite(str(pair), np.hstack([portraits["obama"], portraits["obama"]]))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((fixture_dir / "obama.jpg").read_bytes()[:3000])
    paths = [str(p) for p in (blank, blurred, dark, pair, broken)]
    out = recognizer.enroll(pid, [*paths, str(fixture_dir / "obama.jpg")])
    assert out["templates_added"] == 1
    why = {r["path"]: r["reason"] for r in out["rejected"]}
    assert why[str(blank)] == "no face found"
    assert "too blurred" in why[str(blurred)]
    assert "too dark" in why[str(dark)]
    assert "several faces" in why[str(pair)]
    assert "truncated" in why[str(broken)]


def test_duplicate_person_refused_unless_forced(recognizer: Recognizer,
                                                fixture_dir: Path) -> None:
    first = _person(recognizer, "Barack")
    recognizer.enroll(first, [str(fixture_dir / "obama.jpg")])
    second = _person(recognizer, "Barack again")
    with pytest.raises(DuplicatePersonError, match="already matches person"):
        recognizer.enroll(second, [str(fixture_dir / "obama2.jpg")])
    assert recognizer.store.get_person(second).templates == ()
    out = recognizer.enroll(second, [str(fixture_dir / "obama2.jpg")], force=True)
    assert out["templates_added"] == 1 and out["warnings"]


def test_unknown_person_and_expired_consent(recognizer: Recognizer, fixture_dir: Path) -> None:
    with pytest.raises(PersonNotFound):
        recognizer.enroll("p_doesnotexist", [str(fixture_dir / "obama.jpg")])
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    pid = _person(recognizer, "Short consent", expires=soon)
    import time

    time.sleep(1.2)
    with pytest.raises(ConsentError):
        recognizer.enroll(pid, [str(fixture_dir / "obama.jpg")])


def test_deletion_is_visible_to_the_next_probe(recognizer: Recognizer,
                                               fixture_dir: Path) -> None:
    pid = _person(recognizer, "Barack")
    recognizer.enroll(pid, [str(fixture_dir / "obama.jpg")])
    assert recognizer.identify(str(fixture_dir / "obama2.jpg"))["faces"][0]["person_id"] == pid
    recognizer.store.delete_person(pid, actor="test")
    assert recognizer.identify(str(fixture_dir / "obama2.jpg"))["faces"][0]["person_id"] is None


def test_changes_by_another_process_reach_the_live_matcher(make_config, engine,
                                                           fixture_dir: Path,
                                                           tmp_path: Path) -> None:
    cfg = make_config()
    daemon_side = Recognizer(cfg, GalleryStore.from_config(cfg), engine)
    pid = _person(daemon_side, "Barack")
    daemon_side.enroll(pid, [str(fixture_dir / "obama.jpg")])
    probe = engine.analyze_file(fixture_dir / "obama2.jpg").faces
    assert daemon_side.identify_faces(probe)[0].matched_person_id == pid
    env_cfg = tmp_path / "config.toml"
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "--config", str(env_cfg),
                           "person", "delete", "--json", pid], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert daemon_side.live.refresh() >= 1
    assert daemon_side.identify_faces(probe)[0].matched_person_id is None


def test_one_shot_commands_build_no_packed_copy(make_config) -> None:
    """A CLI process ends before a big gallery's packed copy would pay off; the daemon keeps one."""
    from edge.recognition import open_recognizer

    config = make_config()
    rec = open_recognizer(config)
    assert rec.live.matcher._repacker is None
    daemon_side = Recognizer(config, rec.store, rec.engine)
    assert daemon_side.live.matcher._repacker is not None

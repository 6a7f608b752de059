"""The `edge-face embed` / `verify` contract, run as a real process like other tools run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(args: list[str], models_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    config = tmp_path / "config.toml"
    config.write_text(f'[models]\ndir = "{models_dir}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_FACE_")}
    env["EDGE_FACE_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_embed_json_lines_in_input_order_with_errors(models_dir: Path, fixture_dir: Path,
                                                     tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes((fixture_dir / "obama.jpg").read_bytes()[:2000])
    paths = [str(fixture_dir / "obama.jpg"), str(bad), str(fixture_dir / "biden2.jpg"),
             str(tmp_path / "missing.png")]
    proc = run_cli(["embed", "--json", *paths], models_dir, tmp_path)
    assert proc.returncode != 0
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["path"] for line in lines] == paths
    assert "error" in lines[1] and "truncated" in lines[1]["error"]
    assert "error" in lines[3] and "no such file" in lines[3]["error"].lower()
    for line in (lines[0], lines[2]):
        faces = line["faces"]
        assert faces, line["path"]
        areas = [f["box"][2] * f["box"][3] for f in faces]
        assert areas == sorted(areas, reverse=True)
        for face in faces:
            assert set(face) == {"box", "score", "landmarks", "quality", "embedding"}
            assert len(face["box"]) == 4 and len(face["landmarks"]) == 5
            assert len(face["embedding"]) == 128
            assert sum(v * v for v in face["embedding"]) == pytest.approx(1.0, abs=1e-4)
            assert {"size", "sharpness", "brightness", "contrast", "frontalness",
                    "score"} <= set(face["quality"])


def test_embed_all_good_exits_zero(models_dir: Path, fixture_dir: Path, tmp_path: Path) -> None:
    proc = run_cli(["embed", str(fixture_dir / "obama2.jpg")], models_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 face(s)" in proc.stdout


@pytest.mark.parametrize(("a", "b", "match"), [("obama", "obama3", True),
                                               ("obama", "biden", False)])
def test_verify_json(models_dir: Path, fixture_dir: Path, tmp_path: Path, a: str, b: str,
                     match: bool) -> None:
    proc = run_cli(["verify", "--json", str(fixture_dir / f"{a}.jpg"),
                    str(fixture_dir / f"{b}.jpg")], models_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"similarity", "match", "threshold"}
    assert out["match"] is match
    assert out["threshold"] == pytest.approx(0.363)


def test_verify_without_a_face_is_a_clear_error(models_dir: Path, fixture_dir: Path,
                                                tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 300, 3), 180, np.uint8)).save(blank)
    proc = run_cli(["verify", "--json", str(fixture_dir / "obama.jpg"), str(blank)], models_dir,
                   tmp_path)
    assert proc.returncode == 1
    assert "no face found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_models_name_the_fix(tmp_path: Path, fixture_dir: Path) -> None:
    proc = run_cli(["embed", str(fixture_dir / "obama.jpg")], tmp_path / "no-models", tmp_path)
    assert proc.returncode == 1
    assert "edge-face models fetch" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_embed_jobs_give_the_same_lines_as_one_at_a_time(models_dir: Path, fixture_dir: Path,
                                                         tmp_path: Path) -> None:
    paths = [str(p) for p in sorted(fixture_dir.glob("*.jpg"))]
    one = run_cli(["embed", "--json", "--jobs", "1", *paths], models_dir, tmp_path)
    two = run_cli(["embed", "--json", "--jobs", "2", *paths], models_dir, tmp_path)
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr
    a = [json.loads(line) for line in one.stdout.splitlines()]
    b = [json.loads(line) for line in two.stdout.splitlines()]
    assert [x["path"] for x in a] == [x["path"] for x in b] == paths
    for x, y in zip(a, b, strict=True):
        assert len(x["faces"]) == len(y["faces"])
        for f, g in zip(x["faces"], y["faces"], strict=True):
            assert f["box"] == pytest.approx(g["box"], abs=0.01)
            assert sum(u * v for u, v in zip(f["embedding"], g["embedding"], strict=True)) \
                == pytest.approx(1.0, abs=1e-5)


def test_embed_refuses_negative_jobs(models_dir: Path, fixture_dir: Path, tmp_path: Path) -> None:
    proc = run_cli(["embed", "--jobs", "-1", str(fixture_dir / "obama.jpg")], models_dir,
                   tmp_path)
    assert proc.returncode == 2
    assert "--jobs" in proc.stderr and "0 (one per core) or more" in proc.stderr


def test_missing_models_are_reported_even_when_every_image_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "not-an-image.jpg"
    bad.write_text("hello", encoding="utf-8")
    proc = run_cli(["embed", "--json", str(bad)], tmp_path / "no-models", tmp_path)
    assert proc.returncode != 0
    assert "error" in json.loads(proc.stdout.splitlines()[0])
    assert "models fetch" in proc.stderr
